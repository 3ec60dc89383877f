#!/usr/bin/env bash
# Install the real QEMU endpoints the differential tests compare against.
#
#   QEMU 10.0.x  from bookworm-backports (system install, matches the preinstalled qemu-utils)
#   QEMU 7.2     from plain bookworm, unpacked beside it under $QEMU72_ROOT (default /opt/qemu-7.2)
#
# Idempotent: does nothing when both are already there. Needs root (apt).
set -euo pipefail

QEMU72_ROOT=${QEMU72_ROOT:-/opt/qemu-7.2}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

have_backports() {
    grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

if ! have_backports; then
    echo "install-qemu: adding the bookworm-backports suite"
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
        | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
fi

apt_update_once() {
    if [ "${updated:-no}" != yes ]; then
        $SUDO apt-get update -qq
        updated=yes
    fi
}

if ! command -v qemu-system-x86_64 >/dev/null || ! qemu-system-x86_64 --version | grep -q "version 10\.0"; then
    apt_update_once
    echo "install-qemu: installing qemu-system-x86 and qemu-utils 10.0 from bookworm-backports"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports qemu-system-x86 qemu-utils qemu-block-extra >/dev/null
fi

if [ ! -x "$QEMU72_ROOT/usr/bin/qemu-system-x86_64" ]; then
    apt_update_once
    echo "install-qemu: unpacking QEMU 7.2 from bookworm into $QEMU72_ROOT"
    tmp=$(mktemp -d)
    pkgs=""
    for pkg in qemu-system-x86 qemu-system-data qemu-system-common qemu-block-extra qemu-utils; do
        # each package has its own 7.2 version (binary NMUs add +bN to the arch-specific ones)
        ver=$(apt-cache madison "$pkg" | awk '$3 ~ /^1:7\.2/ {print $3; exit}')
        [ -n "$ver" ] || { echo "install-qemu: no 7.2 $pkg in apt sources" >&2; exit 1; }
        pkgs="$pkgs $pkg=$ver"
    done
    (cd "$tmp" && apt-get download -qq $pkgs)
    $SUDO mkdir -p "$QEMU72_ROOT"
    for deb in "$tmp"/*.deb; do $SUDO dpkg -x "$deb" "$QEMU72_ROOT"; done
    rm -rf "$tmp"
fi

echo "install-qemu: $(qemu-system-x86_64 --version | head -1)"
echo "install-qemu: $(QEMU_MODULE_DIR=$QEMU72_ROOT/usr/lib/x86_64-linux-gnu/qemu \
    "$QEMU72_ROOT/usr/bin/qemu-system-x86_64" -L "$QEMU72_ROOT/usr/share/qemu" --version | head -1)"
