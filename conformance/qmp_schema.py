"""The endpoint's own schema, for the ``schema`` check and for generation.

Built from the endpoint's ``query-qmp-schema`` reply (a list of ``SchemaInfo``), so every
endpoint is judged by what it declares. When helper A's converter
(``conformance.schema.jsonschema``) is importable it is used; otherwise a compact converter here
derives JSON Schema (draft 2020-12) with ``$defs`` per introspected type: objects (members,
optional ones without ``required``, ``additionalProperties: false``, flat-union variants as
``oneOf`` branches on the tag), enums, arrays, alternates, builtins. Masked type names only serve
as ``$defs`` keys; nothing keys on their values.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from conformance.endpoints import Endpoint, JSONObject

#: Real QEMU's recorded ``query-qmp-schema`` replies (scripts/record-qmp-schema.py).
RECORDED_DIR = Path(__file__).resolve().parents[1] / "schema" / "recorded"

#: ``SchemaInfoBuiltin.json-type`` -> JSON Schema.
_BUILTIN = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "int": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "object": {"type": "object"},
    "array": {"type": "array"},
    "value": {},
}

#: The shape of every error reply (QMP spec, "error" response).
ERROR_REPLY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["class", "desc"],
            "properties": {"class": {"type": "string"}, "desc": {"type": "string"}},
            "additionalProperties": False,
        },
        "id": {},
    },
    "additionalProperties": False,
}


def _ref(name: str) -> JSONObject:
    return {"$ref": f"#/$defs/{name}"}


def _object(info: Mapping[str, Any], by_name: Mapping[str, Mapping[str, Any]]) -> JSONObject:
    members = list(info.get("members") or [])
    properties = {m["name"]: _ref(m["type"]) for m in members}
    required = [m["name"] for m in members if "default" not in m]
    base: JSONObject = {"type": "object", "properties": properties, "required": required}
    variants = info.get("variants")
    if not variants:
        base["additionalProperties"] = False
        return base
    tag = info["tag"]
    branches = []
    for variant in variants:
        extra = by_name.get(variant["type"], {})
        extra_members = list(extra.get("members") or [])
        props = {**properties, **{m["name"]: _ref(m["type"]) for m in extra_members}}
        props[tag] = {"const": variant["case"]}
        req = required + [m["name"] for m in extra_members if "default" not in m]
        branches.append(
            {"type": "object", "properties": props, "required": req, "additionalProperties": False}
        )
    return {"oneOf": branches}


def _compact_convert(items: Sequence[Mapping[str, Any]]) -> JSONObject:
    by_name = {str(i["name"]): i for i in items}
    defs: JSONObject = {}
    commands: JSONObject = {}
    events: JSONObject = {}
    for info in items:
        meta = info.get("meta-type")
        name = str(info["name"])
        if meta == "builtin":
            defs[name] = _BUILTIN.get(str(info.get("json-type")), {})
        elif meta == "enum":
            defs[name] = {"enum": list(info.get("values") or [])}
        elif meta == "array":
            defs[name] = {"type": "array", "items": _ref(info["element-type"])}
        elif meta == "alternate":
            defs[name] = {"anyOf": [_ref(m["type"]) for m in info.get("members") or []]}
        elif meta == "object":
            defs[name] = _object(info, by_name)
        elif meta == "command":
            commands[name] = {
                "arguments": _ref(info["arg-type"]),
                "returns": _ref(info["ret-type"]),
            }
        elif meta == "event":
            events[name] = _ref(info["arg-type"])
    return {"$defs": defs, "commands": commands, "events": events}


def _converter() -> Any:
    """Helper A's converter function, when it has landed (its module is optional here)."""
    try:
        module = importlib.import_module("conformance.schema.jsonschema")
    except ImportError:
        return None
    return getattr(module, "convert", None)


@dataclass
class DerivedSchema:
    """JSON Schemas of one endpoint's commands and events, with validators."""

    document: JSONObject
    version: str = ""
    _validators: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_introspection(
        cls, items: Sequence[Mapping[str, Any]], version: str = ""
    ) -> DerivedSchema:
        """Derive from a ``query-qmp-schema`` return value (helper A's converter if present)."""
        convert = _converter()
        if convert is not None:
            return cls(dict(convert(list(items))), version)
        return cls(_compact_convert(items), version)

    @classmethod
    def of(cls, endpoint: Endpoint) -> DerivedSchema | None:
        """Ask the endpoint; ``None`` when it has no ``query-qmp-schema``."""
        reply = endpoint.execute("query-qmp-schema")
        if "return" not in reply:
            return None
        return cls.from_introspection(reply["return"], endpoint.version_label)

    @classmethod
    def recorded(cls, version: str) -> DerivedSchema | None:
        """Real QEMU's recorded schema of ``version`` (``schema/recorded``), if there is one."""
        path = RECORDED_DIR / f"qemu-{version}.json"
        if not path.exists():
            return None
        document = json.loads(path.read_text())
        return cls.from_introspection(document["schema"], version)

    def _validator(self, key: str, schema: JSONObject) -> Any:
        if key not in self._validators:
            # The compact converter shares one $defs; the full converter's schemas stand alone.
            shared = self.document.get("$defs")
            full = schema if shared is None or "$defs" in schema else {**schema, "$defs": shared}
            self._validators[key] = jsonschema.Draft202012Validator(full)
        return self._validators[key]

    def has_command(self, command: str) -> bool:
        """Whether the endpoint declares ``command``."""
        return command in self.document["commands"]

    def command_schema(self, command: str, part: str) -> JSONObject | None:
        """``arguments`` or ``returns`` schema (a ``$ref`` into ``$defs``) of ``command``."""
        entry = self.document["commands"].get(command)
        return None if entry is None else dict(entry[part])

    def reply_problems(self, command: str, reply: Mapping[str, Any]) -> list[str]:
        """Why ``reply`` does not validate (empty: valid)."""
        if "error" in reply:
            validator = self._validator("!error", ERROR_REPLY)
            return [e.message for e in validator.iter_errors(dict(reply))]
        returns = self.command_schema(command, "returns")
        if returns is None:
            return []
        validator = self._validator(f"ret:{command}", returns)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(reply.get("return"))
        ]

    def event_problems(self, event: Mapping[str, Any]) -> list[str]:
        """Why an event does not validate against the schema of its name."""
        name = str(event.get("event"))
        schema = self.document["events"].get(name)
        if schema is None:
            return [f"event {name} is not declared by the endpoint's schema"]
        validator = self._validator(f"ev:{name}", schema)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(event.get("data", {}))
        ]
