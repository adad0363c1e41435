#!/usr/bin/env bash
# Installs what the tests use beyond the Rust toolchain, from Debian packages:
# - dataset-fashion-mnist: the full Fashion-MNIST IDX files, into /usr/share/datasets/fashion-mnist;
# - fortunes: the fortune-cookie files the `fortunes` language-modelling corpus reads, into
#   /usr/share/games/fortunes.
# Without them the end-to-end tests that read them are skipped, everything else runs.
set -uo pipefail
missing=()
fm=/usr/share/datasets/fashion-mnist
[ -f "$fm/train-images-idx3-ubyte.gz" ] || [ -f "$fm/train-images-idx3-ubyte" ] || missing+=(dataset-fashion-mnist)
[ -f /usr/share/games/fortunes/computers ] || missing+=(fortunes)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "note: not root; install with: apt-get install ${missing[*]} (their tests are skipped meanwhile)" >&2
  exit 0
fi
echo "installing ${missing[*]} (Debian packages) ..." >&2
if ! ($sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}") >/dev/null; then
  echo "warning: could not install ${missing[*]}; the end-to-end tests that read them will be skipped" >&2
fi
exit 0
