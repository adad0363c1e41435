#!/usr/bin/env bash
# Create bench/peers/.venv and install the peer frameworks at pinned versions (idempotent).
#   bench/peers/setup.sh            # install (skipped when already installed)
#   bench/peers/setup.sh --force    # reinstall from requirements.txt
# CPU-only machines: PyPI's torch wheel pulls the CUDA runtime wheels (several GB); harmless.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.installed"
req="$here/requirements.txt"

if [[ "${1:-}" != "--force" && -f "$stamp" ]] && cmp -s "$stamp" "$req"; then
    echo "bench/peers/.venv is up to date ($(grep -c '^[^#].*==' "$req") pinned packages); --force to reinstall"
    exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "setup.sh: needs Python >= 3.11 (tomllib; the pins are for 3.11): PYTHON=python3.11 $0" >&2; exit 1; }
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade --quiet pip
"$venv/bin/python" -m pip install --quiet -r "$req"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for p in ("flwr", "torch", "pfl", "numpy", "ray"):
    print(f"{p}=={md.version(p)}")
import flwr, torch, pfl  # noqa: F401  (the imports must work)
PY
cp "$req" "$stamp"
