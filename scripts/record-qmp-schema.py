#!/usr/bin/env python3
"""Record real QEMU's ``query-qmp-schema`` reply as test data.

Launches each QEMU binary (``-M none -nodefaults -display none``, QMP over a socket, through
:class:`conformance.endpoints.QemuEndpoint`), runs ``query-version`` and ``query-qmp-schema``, and
writes ``schema/recorded/qemu-<major>.<minor>.json``::

    {"version": {...query-version reply...}, "schema": [...SchemaInfo list, unmodified...]}

The files are produced from the binaries only; never edit them by hand. Usage::

    scripts/record-qmp-schema.py            # both 7.2 and 10.0
    scripts/record-qmp-schema.py 10.0       # one version
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.endpoints import QemuEndpoint, qemu_binaries  # noqa: E402

OUT = ROOT / "schema" / "recorded"


def record(version: str) -> Path:
    """Query the QEMU of ``version`` and write its schema file; return the path."""
    binary = qemu_binaries()[version]
    with QemuEndpoint(binary) as qemu:
        ver = qemu.execute("query-version")["return"]
        schema = qemu.execute("query-qmp-schema")["return"]
    label = f"{ver['qemu']['major']}.{ver['qemu']['minor']}"
    if label != version:
        raise SystemExit(f"{binary} announces {label}, expected {version}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"qemu-{label}.json"
    path.write_text(json.dumps({"version": ver, "schema": schema}, indent=1) + "\n")
    return path


def main(argv: list[str]) -> int:
    versions = argv or ["7.2", "10.0"]
    for version in versions:
        print(record(version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
