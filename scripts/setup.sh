#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind (Debian bookworm, Rust
# toolchain, CPython 3.11): real QEMU 10.0 and 7.2 for differential tests, the Python
# dependencies, and the package itself (the Rust core built by maturin, editable).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-qemu.sh
python3 -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2"
python3 -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
