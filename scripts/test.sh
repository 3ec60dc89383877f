#!/usr/bin/env bash
# The one command that runs every check: formatting, lints, types, the native stub, cargo test
# and pytest (differential tests against real QEMU 7.2 and 10.0 included). CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }
step "rustfmt";  cargo fmt --all -- --check
step "clippy";   cargo clippy --workspace --all-targets --quiet -- -D warnings
step "ruff";     python3 -m ruff check .
step "ruff format"; python3 -m ruff format --check .
step "mypy";     python3 -m mypy
step "stubtest"; python3 -m mypy.stubtest reference._core
step "cargo test"; cargo test --workspace --quiet
step "pytest";   python3 -m pytest -n 2 -q -p no:cacheprovider
