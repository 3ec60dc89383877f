"""``query-qmp-schema`` for one emulated version, shaped like QEMU's reply.

The reply is a list of ``SchemaInfo`` objects: every command and event by name, then every type
they reach. As in QEMU, type names are masked: builtins keep their JSON-ish names (``int``,
``str``, ``bool``, ``number``, ``null``, ``any``; every integer width is ``int``), arrays are
``[T]``, the empty object is ``"0"`` and every other type gets the next number in order of first
use. Optional members carry ``"default": null``; union ``variants`` list every tag value, the ones
without members pointing at the empty object; features appear only when present.

Masked numbers differ from QEMU's (QEMU numbers its whole schema, ours is smaller): compare
replies structurally, following type references from a command (see the tests), never by name.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .schema import (
    AlternateType,
    ArrayType,
    Builtin,
    EnumType,
    ObjectType,
    Schema,
    Type,
)

SchemaInfo = dict[str, Any]

#: The masked name of the empty object type (commands without arguments or return value).
EMPTY_OBJECT = "0"


class _Namer:
    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.queue: deque[Type] = deque()
        self.next_number = 1

    def use(self, typ: Type | None) -> str:
        if typ is None:
            return EMPTY_OBJECT
        if isinstance(typ, Builtin):
            name = typ.json_type if typ.json_type in ("int", "number", "null") else typ.name
            if id(typ) not in self.names:
                self.names[id(typ)] = name
                self.queue.append(typ)
            return name
        if isinstance(typ, ArrayType):
            key = id(typ)
            if key not in self.names:
                self.names[key] = f"[{self.use(typ.element)}]"
                self.queue.append(typ)
            return self.names[key]
        key = id(typ)
        if key not in self.names:
            self.names[key] = str(self.next_number)
            self.next_number += 1
            self.queue.append(typ)
        return self.names[key]


def _with_features(info: SchemaInfo, features: list[str]) -> SchemaInfo:
    if features:
        info["features"] = list(features)
    return info


def _object_info(typ: ObjectType, name: str, namer: _Namer) -> SchemaInfo:
    members: list[SchemaInfo] = []
    for member in typ.all_members():
        entry: SchemaInfo = {"name": member.name, "type": namer.use(member.type)}
        if member.optional:
            entry["default"] = None
        members.append(_with_features(entry, member.features))
    info: SchemaInfo = {"name": name, "meta-type": "object", "members": members}
    if typ.tag is not None:
        tag_type = next(m.type for m in typ.all_members() if m.name == typ.tag)
        assert isinstance(tag_type, EnumType)
        listed = [v.case for v in typ.variants]
        cases = listed + [c for c in tag_type.values if c not in listed]
        info["tag"] = typ.tag
        info["variants"] = []
        for case in cases:
            variant = typ.variant(case)
            info["variants"].append(
                {"case": case, "type": namer.use(variant.type if variant else None)}
            )
    return _with_features(info, typ.features)


def _type_info(typ: Type, name: str, namer: _Namer) -> SchemaInfo:
    if isinstance(typ, Builtin):
        return {"name": name, "meta-type": "builtin", "json-type": typ.json_type}
    if isinstance(typ, ArrayType):
        return {"name": name, "meta-type": "array", "element-type": namer.use(typ.element)}
    if isinstance(typ, EnumType):
        info: SchemaInfo = {
            "name": name,
            "meta-type": "enum",
            "members": [_with_features({"name": m.name}, m.features) for m in typ.members],
            "values": typ.values,
        }
        return _with_features(info, typ.features)
    if isinstance(typ, AlternateType):
        info = {
            "name": name,
            "meta-type": "alternate",
            "members": [{"type": namer.use(a.type)} for a in typ.alternatives],
        }
        return _with_features(info, typ.features)
    assert isinstance(typ, ObjectType)
    return _object_info(typ, name, namer)


def introspect(schema: Schema) -> list[SchemaInfo]:
    """The ``query-qmp-schema`` return value for ``schema``'s version."""
    namer = _Namer()
    out: list[SchemaInfo] = []
    for command in schema.commands.values():
        info: SchemaInfo = {
            "name": command.name,
            "meta-type": "command",
            "arg-type": namer.use(command.arg_type),
            "ret-type": namer.use(command.ret_type),
        }
        if command.allow_oob:
            info["allow-oob"] = True
        out.append(_with_features(info, command.features))
    for event in schema.events.values():
        info = {"name": event.name, "meta-type": "event", "arg-type": namer.use(event.arg_type)}
        out.append(_with_features(info, event.features))
    out.append({"name": EMPTY_OBJECT, "meta-type": "object", "members": []})
    while namer.queue:
        typ = namer.queue.popleft()
        out.append(_type_info(typ, namer.names[id(typ)], namer))
    # Builtins and arrays may be reached through several Type objects: keep one entry each.
    seen: set[str] = set()
    unique: list[SchemaInfo] = []
    for entry in out:
        if entry["name"] not in seen:
            seen.add(entry["name"])
            unique.append(entry)
    return unique
