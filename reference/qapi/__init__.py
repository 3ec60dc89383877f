"""The QAPI schema of what the reference implements, and QEMU-exact argument checking.

Usage (what the engine does before running any command)::

    from reference.qapi import QAPIError, load_schema

    schema = load_schema(version="10.0")          # parsed once per version, then cached
    try:
        schema.check_arguments("transaction", arguments)
    except QAPIError as err:
        reply = {"error": {"class": err.error_class, "desc": err.desc}}

The schema source lives in ``schema/qapi/*.json`` (QAPI's schema language, see
:mod:`reference.qapi.parser`); :mod:`reference.qapi.schema` is the typed model,
:mod:`reference.qapi.validate` the argument checking and :mod:`reference.qapi.introspect` the
``query-qmp-schema`` reply. This package must not import the engine.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .parser import Expression, QAPIParseError, parse_file
from .schema import QAPISchemaError, Schema, UnknownCommand, build_schema
from .validate import QAPIError

__all__ = [
    "SCHEMA_FILE",
    "QAPIError",
    "QAPIParseError",
    "QAPISchemaError",
    "Schema",
    "UnknownCommand",
    "load_schema",
]

#: The main file of our schema (it includes the others).
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema" / "qapi" / "qapi-schema.json"


@functools.cache
def _expressions(path: Path) -> tuple[Expression, ...]:
    return tuple(parse_file(path))


@functools.cache
def load_schema(version: str = "10.0", path: Path = SCHEMA_FILE) -> Schema:
    """The :class:`Schema` of emulated QEMU ``version`` (``"7.2"``, ``"10.0"``), cached."""
    return build_schema(list(_expressions(path)), version)
