#!/usr/bin/env bash
# The main job until the conformance suite exists: set up, start the reference endpoint with
# QEMU's command line, and run a short demo transaction against it over QMP with qemu.qmp.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 scripts/demo.py "$@"
