"""Shared data of the schema-layer tests: introspection sources and their derived schemas."""

from __future__ import annotations

import functools
from typing import Any

from conformance.schema.jsonschema import DerivedSchema
from conformance.schema.messages import derived_schema, recorded_introspection

VERSIONS = ("7.2", "10.0")
#: Where an introspection comes from: real QEMU as recorded, or the reference's live reply.
SOURCES = tuple(f"{kind}:{v}" for kind in ("recorded", "reference") for v in VERSIONS)


@functools.cache
def introspection(source: str) -> list[dict[str, Any]]:
    """The ``query-qmp-schema`` reply of ``recorded:V`` or ``reference:V``."""
    kind, _, version = source.partition(":")
    if kind == "recorded":
        return recorded_introspection(version)
    from reference import Machine  # noqa: PLC0415 - only these sources need the engine

    machine = Machine(version)
    try:
        reply: list[dict[str, Any]] = machine.execute("query-qmp-schema")["return"]
    finally:
        machine.close()
    return reply


@functools.cache
def derived(source: str) -> DerivedSchema:
    """The derived JSON Schemas of ``source``, with our QAPI's integer bounds."""
    return derived_schema(introspection(source), source.partition(":")[2])
