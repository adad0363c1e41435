#!/usr/bin/env bash
# cargo deny over the workspace (deny.toml): licences, banned crates (bincode) and sources; and
# security advisories where the RustSec database (github.com) is reachable. Installs cargo-deny
# from crates.io on first use (a few minutes of compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deny >/dev/null; then
    echo "installing cargo-deny (cargo install --locked) ..." >&2
    cargo install cargo-deny --locked --quiet
fi
if timeout 15 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny --log-level warn check
else
    echo "note: github.com (the RustSec advisory database) is unreachable; checking licences, bans and sources" >&2
    cargo deny --log-level warn check licenses bans sources
fi
