"""Any ``query-qmp-schema`` reply → JSON Schema (draft 2020-12), one schema per message.

Usage::

    from conformance.schema.jsonschema import convert

    derived = convert(schema_info)                  # a list of SchemaInfo, any QEMU, any build
    derived = convert(schema_info, qapi=load_schema("10.0"))   # + integer bounds from our QAPI
    derived["commands"]["transaction"]["arguments"]  # a complete draft 2020-12 schema
    derived["commands"]["query-block"]["returns"]
    derived["events"]["BLOCK_JOB_COMPLETED"]          # the event's ``data``

The result is ``{"commands": {NAME: {"arguments": S, "returns": S}}, "events": {NAME: S}}``;
every ``S`` stands alone (``$schema``, its own ``$defs``).

Mapping (nothing ever keys on a masked type name: those are build-specific numbers; only
command/event names, member names, enum values and structure are used):

* builtins by ``json-type``: ``string``/``boolean``/``null``/``number`` as such, ``int`` →
  ``integer`` (bounded by ``[-2**63, 2**64-1]``, all any QEMU integer can be), ``value``
  (QEMU's ``any``) → ``{}`` (every JSON value);
* enums → ``{"type": "string", "enum": [...]}``; arrays → ``{"type": "array", "items": S}``;
* objects → ``type: object``, ``properties``, ``required`` (members without ``default``),
  ``additionalProperties: false``;
* flat unions → ``oneOf`` with one concrete branch per tag value, each a complete flattened
  object (base members + the variant's members, the tag a ``const``), no ``allOf`` and no
  ``unevaluatedProperties``; tag values that list no variant get a branch of the base members
  alone (QAPI's empty branches); a variant that is itself a union multiplies out;
* alternates → ``oneOf`` of the member schemas (QAPI guarantees their JSON types differ);
* ``deprecated`` features → the ``"deprecated": true`` annotation (validation unaffected).

Recursion (``BlockdevOptions`` ↔ ``BlockdevRef``, ``ImageInfo.backing-image``, ...): types on a
cycle of the type graph (found structurally, Tarjan's SCC) are emitted once into ``$defs`` and
referenced with ``$ref``; everything else is inlined. ``$defs`` keys are ``r0``, ``r1``, ... in
the order the traversal of that schema first meets them, the traversal following member order,
so they do not depend on masked names either. Validators follow ``$ref`` as usual; for
generation :mod:`conformance.schema.strategies` bounds the number of nested ``$ref`` expansions
and, at the bound, keeps only the branches that need no further expansion (for ``BlockdevRef``
that is the ``str`` node-name branch), so generated values are finite and still valid.

Integer widths: introspection says only ``int``. With ``qapi`` (a :class:`reference.qapi.Schema`)
the converter walks our QAPI types in parallel with the introspected ones, by command/event name,
member name, union tag value, array element and alternate JSON kind: where both sides agree, an
``int8`` .. ``uint64``/``size`` member gets its exact ``minimum``/``maximum``. Where our QAPI does
not know the command or the member, the generic bounds apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "DRAFT",
    "INTEGER_BOUNDS",
    "INT_MAX",
    "INT_MIN",
    "ConversionError",
    "DerivedSchema",
    "QAPISource",
    "convert",
    "recursive_types",
]

JSONSchema = dict[str, Any]
#: ``{"commands": {name: {"arguments": S, "returns": S}}, "events": {name: S}}``
DerivedSchema = dict[str, dict[str, Any]]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: No QEMU integer is below int64's minimum or above uint64's maximum.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

#: QAPI's integer builtins (lost in introspection, all ``int`` there) → (minimum, maximum).
INTEGER_BOUNDS: dict[str, tuple[int, int]] = {
    "int": (-(2**63), 2**63 - 1),
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "size": (0, 2**64 - 1),
}


class QAPISource(Protocol):
    """What the converter reads of a parsed QAPI schema (:class:`reference.qapi.Schema`).

    ``commands[name]`` has ``arg_type``/``ret_type``, ``events[name]`` has ``arg_type``; types
    are read by duck typing: an object type has ``all_members()`` (members with ``name`` and
    ``type``) and ``variant(case)`` (``None`` or one with ``type``), an array ``element``, an
    alternate ``alternatives`` (each with ``type``, whose ``json_kind`` is ``string``, ``int``,
    ``number``, ``boolean``, ``null``, ``object``, ``array`` or ``value``), a builtin its
    ``name``. Nothing here imports the reference: this module works without it.
    """

    @property
    def commands(self) -> Mapping[str, Any]: ...

    @property
    def events(self) -> Mapping[str, Any]: ...


_BUILTIN: dict[str, JSONSchema] = {
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "number": {"type": "number"},
    "int": {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
    "value": {},
    # JSONType also names these two; no QEMU builtin uses them today, but any reply may.
    "object": {"type": "object"},
    "array": {"type": "array"},
}
#: introspection ``json-type`` → the JSON kind our QAPI model calls it (``Type.json_kind``).
_KIND = {
    "string": "string",
    "boolean": "boolean",
    "null": "null",
    "number": "number",
    "int": "int",
    "value": "value",
    "object": "object",
    "array": "array",
}

#: introspection ``meta-type`` of a non-builtin → its JSON kind.
_META_KIND = {"enum": "string", "object": "object", "array": "array"}


class ConversionError(ValueError):
    """The reply is not a well-formed ``query-qmp-schema`` (dangling type name, bad meta-type)."""


def _edges(info: Mapping[str, Any]) -> Iterator[str]:
    meta = info["meta-type"]
    if meta == "array":
        yield info["element-type"]
    elif meta == "alternate":
        yield from (m["type"] for m in info["members"])
    elif meta == "object":
        yield from (m["type"] for m in info["members"])
        yield from (v["type"] for v in info.get("variants", ()))


def recursive_types(types: Mapping[str, Mapping[str, Any]]) -> frozenset[str]:
    """Names of the types that lie on a cycle of the type graph (strongly connected components
    of more than one type, or a type referring to itself). Iterative Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: set[str] = set()
    counter = 0
    for root in types:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, _edges(types[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in types:
                    raise ConversionError(f"type {node!r} refers to unknown type {target!r}")
                if target == node:
                    found.add(node)
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, _edges(types[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.update(component)
    return frozenset(found)


def _deprecated(schema: JSONSchema, features: Iterable[str] | None) -> JSONSchema:
    if features and "deprecated" in features:
        return {**schema, "deprecated": True}
    return schema


def _qapi_member(qtype: Any, name: str) -> Any:
    if qtype is not None and hasattr(qtype, "all_members"):
        for member in qtype.all_members():
            if member.name == name:
                return member.type
    return None


def _qapi_variant(qtype: Any, case: str) -> Any:
    if qtype is not None and hasattr(qtype, "variant"):
        variant = qtype.variant(case)
        if variant is not None:
            return variant.type
    return None


def _qapi_alternative(qtype: Any, json_type: str) -> Any:
    if qtype is not None and hasattr(qtype, "alternatives"):
        kind = _KIND.get(json_type, json_type)
        for alternative in qtype.alternatives:
            if alternative.type.json_kind == kind:
                return alternative.type
    return None


class _Converter:
    """Converts the roots of one schema; owns that schema's ``$defs``."""

    def __init__(self, types: Mapping[str, Mapping[str, Any]], recursive: frozenset[str]) -> None:
        self.types = types
        self.recursive = recursive
        self.defs: dict[str, JSONSchema] = {}
        self.def_names: dict[str, str] = {}

    def info(self, name: str) -> Mapping[str, Any]:
        try:
            return self.types[name]
        except KeyError:
            raise ConversionError(f"unknown type {name!r}") from None

    def ref(self, name: str, qtype: Any) -> JSONSchema:
        if name in self.recursive:
            if name not in self.def_names:
                key = f"r{len(self.def_names)}"
                self.def_names[name] = key
                self.defs[key] = {}  # placeholder: the body may refer back to it
                self.defs[key] = self.body(name, qtype)
            return {"$ref": f"#/$defs/{self.def_names[name]}"}
        return self.body(name, qtype)

    def body(self, name: str, qtype: Any) -> JSONSchema:
        info = self.info(name)
        meta = info["meta-type"]
        if meta == "builtin":
            return self.builtin(info["json-type"], qtype)
        if meta == "enum":
            values = info.get("values")
            if values is None:
                values = [m["name"] for m in info.get("members", ())]
            return _deprecated({"type": "string", "enum": list(values)}, info.get("features"))
        if meta == "array":
            element = getattr(qtype, "element", None)
            return {"type": "array", "items": self.ref(info["element-type"], element)}
        if meta == "alternate":
            branches = []
            for member in info["members"]:
                member_info = self.info(member["type"])
                kind = member_info.get("json-type") or _META_KIND.get(member_info["meta-type"], "")
                branches.append(self.ref(member["type"], _qapi_alternative(qtype, kind)))
            return _deprecated({"oneOf": branches}, info.get("features"))
        if meta == "object":
            return _deprecated(self.object(name, qtype), info.get("features"))
        raise ConversionError(f"type {name!r} has meta-type {meta!r}")

    @staticmethod
    def builtin(json_type: str, qtype: Any) -> JSONSchema:
        if json_type not in _BUILTIN:
            raise ConversionError(f"unknown builtin json-type {json_type!r}")
        schema = dict(_BUILTIN[json_type])
        name = getattr(qtype, "name", None)
        if json_type == "int" and name in INTEGER_BOUNDS and not hasattr(qtype, "members"):
            low, high = INTEGER_BOUNDS[name]
            schema["minimum"], schema["maximum"] = low, high
        return schema

    def branches(self, name: str, qtype: Any) -> list[tuple[dict[str, JSONSchema], list[str]]]:
        """The concrete shapes of object ``name``: (properties, required) per branch."""
        info = self.info(name)
        if info["meta-type"] != "object":
            raise ConversionError(f"union variant {name!r} is not an object")
        properties: dict[str, JSONSchema] = {}
        required: list[str] = []
        for member in info["members"]:
            member_name = member["name"]
            schema = self.ref(member["type"], _qapi_member(qtype, member_name))
            properties[member_name] = _deprecated(schema, member.get("features"))
            if "default" not in member:
                required.append(member_name)
        tag = info.get("tag")
        if tag is None:
            return [(properties, required)]
        if tag not in properties:
            raise ConversionError(f"union {name!r}: tag {tag!r} is not a member")
        tag_info = self.info(self._member_type(info, tag))
        cases = [v["case"] for v in info.get("variants", ())]
        cases += [c for c in tag_info.get("values", ()) if c not in cases]
        variant_of = {v["case"]: v["type"] for v in info.get("variants", ())}
        out: list[tuple[dict[str, JSONSchema], list[str]]] = []
        for case in cases:
            tag_schema = _deprecated({"const": case}, self._enum_features(tag_info, case))
            base = {**properties, tag: tag_schema}
            if case not in variant_of:
                out.append((base, list(required)))
                continue
            for extra, extra_required in self.branches(
                variant_of[case], _qapi_variant(qtype, case)
            ):
                merged = {**base, **{k: v for k, v in extra.items() if k != tag}}
                out.append((merged, required + [r for r in extra_required if r not in required]))
        return out

    @staticmethod
    def _member_type(info: Mapping[str, Any], name: str) -> str:
        for member in info["members"]:
            if member["name"] == name:
                return str(member["type"])
        raise ConversionError(f"{info['name']!r} has no member {name!r}")

    @staticmethod
    def _enum_features(info: Mapping[str, Any], value: str) -> list[str] | None:
        for member in info.get("members", ()):
            if member.get("name") == value:
                features: list[str] | None = member.get("features")
                return features
        return None

    def object(self, name: str, qtype: Any) -> JSONSchema:
        shapes = [
            {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
            for properties, required in self.branches(name, qtype)
        ]
        if self.info(name).get("tag") is None:
            return shapes[0]
        return {"oneOf": shapes}

    def root(self, name: str, qtype: Any) -> JSONSchema:
        schema = {"$schema": DRAFT, **self.ref(name, qtype)}
        if self.defs:
            schema["$defs"] = self.defs
        return schema


def _index(schema_info: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    types: dict[str, Mapping[str, Any]] = {}
    for info in schema_info:
        if not isinstance(info, Mapping) or "name" not in info or "meta-type" not in info:
            raise ConversionError(f"not a SchemaInfo: {info!r}")
        types[str(info["name"])] = info
    return types


def convert(
    schema_info: Sequence[Mapping[str, Any]], *, qapi: QAPISource | None = None
) -> DerivedSchema:
    """JSON Schemas of every command's arguments and return value and every event's data.

    ``schema_info`` is a ``query-qmp-schema`` return value. ``qapi``, our parsed QAPI schema of
    the same QEMU version, adds exact integer bounds where it matches (see the module doc).
    """
    types = _index(schema_info)
    graph = {n: i for n, i in types.items() if i["meta-type"] not in ("command", "event")}
    recursive = recursive_types(graph)
    commands: dict[str, Any] = {}
    events: dict[str, Any] = {}
    for name, info in types.items():
        meta = info["meta-type"]
        if meta == "command":
            command = qapi.commands.get(name) if qapi is not None else None
            commands[name] = {
                "arguments": _Converter(graph, recursive).root(
                    info["arg-type"], command.arg_type if command else None
                ),
                "returns": _Converter(graph, recursive).root(
                    info["ret-type"], command.ret_type if command else None
                ),
            }
        elif meta == "event":
            event = qapi.events.get(name) if qapi is not None else None
            events[name] = _Converter(graph, recursive).root(
                info["arg-type"], event.arg_type if event else None
            )
    return {"commands": commands, "events": events}
