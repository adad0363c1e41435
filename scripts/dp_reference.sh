#!/usr/bin/env bash
# Regenerate crates/fedkit-privacy/tests/data/rdp_reference.json and pld_reference.json from
# Google's dp-accounting, and
# rdp_truth.json (80-digit mpmath values for the ill-conditioned cases),
# installed from PyPI into a throwaway venv (only the JSON is committed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q "dp-accounting==${DP_ACCOUNTING_VERSION:-0.6.0}" mpmath
"$venv/bin/python" scripts/dp_reference.py crates/fedkit-privacy/tests/data/rdp_reference.json
"$venv/bin/python" scripts/dp_truth.py crates/fedkit-privacy/tests/data/rdp_truth.json
"$venv/bin/python" scripts/pld_reference.py crates/fedkit-privacy/tests/data/pld_reference.json
