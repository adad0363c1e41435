#!/usr/bin/env bash
# The test command of the README: installs test data, then runs every test of the workspace.
# Tests build with --release, the same profile as the binary, so the tensor backend compiles once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --release --workspace "$@"
