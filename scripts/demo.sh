#!/usr/bin/env bash
# The main job: set up, then run the conformance suite. By default against the embedded
# reference (curated scenarios + 100 generated sequences); with real QEMU when asked
# (--target qemu, --target qemu:7.2) or, with --with-qemu, against every QEMU found.
# Reports (JSON, JUnit, HTML) and reproducers land in ./conformance-report.
#
#   bash scripts/demo.sh                       # reference only
#   bash scripts/demo.sh --with-qemu           # + QEMU 10.0 and 7.2 when installed
#   bash scripts/demo.sh --target qemu ...     # any qmp-conformance run options
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${SKIP_SETUP:-}" != 1 ]]; then
    bash scripts/setup.sh
fi
args=()
with_qemu=0
for arg in "$@"; do
    if [[ "$arg" == --with-qemu ]]; then with_qemu=1; else args+=("$arg"); fi
done
if [[ " ${args[*]-} " != *" --target "* ]]; then
    args+=(--target reference)
    if [[ $with_qemu == 1 ]]; then
        command -v qemu-system-x86_64 >/dev/null && args+=(--target qemu)
        [[ -x /opt/qemu-7.2/usr/bin/qemu-system-x86_64 ]] && args+=(--target qemu:7.2)
    fi
fi
if [[ " ${args[*]} " != *" --max-examples "* ]]; then
    args+=(--max-examples 100 --seed 1)
fi
exec python3 -m conformance.cli run --workers 2 --report json,junit,html \
    --report-dir conformance-report "${args[@]}"
