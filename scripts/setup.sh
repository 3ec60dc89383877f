#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind (Debian bookworm, Rust
# toolchain, CPython 3.11): real QEMU 10.0 and 7.2 for differential tests, libzstd-dev and
# zlib1g-dev, the Python dependencies, and the package itself (the Rust core built by maturin,
# editable).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-qemu.sh
# The Rust core links the system's libzstd and zlib (the ones QEMU uses), so compressed clusters
# are the bytes QEMU writes; without them the zstd and libz-sys crates build bundled copies.
if ! dpkg -s libzstd-dev zlib1g-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        libzstd-dev zlib1g-dev pkg-config >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check "maturin>=1.7,<2"
python3 -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
