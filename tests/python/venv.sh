#!/usr/bin/env bash
# Creates (once) tests/python/.venv from tests/python/requirements.txt and prints its python.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
if ! cmp -s "$venv/.installed" "$here/requirements.txt" 2>/dev/null; then
    echo "tests/python: creating $venv ($(grep -c '==' "$here/requirements.txt") pinned packages, no torch) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.installed"
fi
echo "$venv/bin/python"
