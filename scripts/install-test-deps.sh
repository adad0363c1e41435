#!/usr/bin/env bash
# Installs what the tests use beyond the Rust toolchain: Debian's full Fashion-MNIST IDX files
# (package dataset-fashion-mnist, into /usr/share/datasets/fashion-mnist). Without them the
# Fashion-MNIST end-to-end test is skipped, everything else runs.
set -uo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
  echo "note: not root; install Fashion-MNIST with: apt-get install dataset-fashion-mnist (its test is skipped meanwhile)" >&2
  exit 0
fi
echo "installing dataset-fashion-mnist (Debian package) ..." >&2
if ! ($sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist) >/dev/null; then
  echo "warning: could not install dataset-fashion-mnist; its end-to-end test will be skipped" >&2
fi
exit 0
