#!/usr/bin/env bash
# CI's Chromium suite (under a minute once Chromium is installed): `fedkit report --html` opened
# in headless Chromium. Checks what renders, not the source: the DOM Chromium built holds one
# SVG per plot with its curves, and a screenshot's pixels show both runs' curve colours.
# Installs Debian's chromium when missing (as root); skips with a note when it cannot.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "tests/browser: installing Debian's chromium ..." >&2
        (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
    else
        echo "note: chromium is not installed and this is not root; the browser check is skipped" >&2
        exit 0
    fi
fi
py=$("$root/tests/python/venv.sh")
fedkit="$root/target/release/fedkit"
[ -x "$fedkit" ] || (cd "$root" && cargo build --release --quiet)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
smoke="$root/configs/smoke/synthetic.toml"
"$fedkit" run "$smoke" --out "$out/fedavg" --quiet --set rounds=15 --set eval.clients=true
"$fedkit" run "$smoke" --out "$out/fedprox" --quiet --set rounds=15 --set eval.clients=true \
    --set 'algorithm.use="fedprox"' --set algorithm.mu=0.5
"$fedkit" report "$out/fedavg" "$out/fedprox" --html "$out/report.html" >/dev/null
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$out/profile" --window-size=1500,2600)
timeout 120 "${chrome[@]}" --dump-dom "file://$out/report.html" >"$out/dom.html" 2>/dev/null
timeout 120 "${chrome[@]}" --screenshot="$out/shot.png" "file://$out/report.html" >/dev/null 2>&1
$py "$here/check_report.py" "$out/dom.html" "$out/shot.png"
if [ -n "${FEDKIT_KEEP_SCREENSHOT:-}" ]; then cp "$out/shot.png" "$FEDKIT_KEEP_SCREENSHOT"; fi
echo "tests/browser: the report renders"
