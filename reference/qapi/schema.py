"""The typed model of a QAPI schema, as seen by one emulated QEMU version.

:func:`build_schema` takes the parsed expressions (:mod:`reference.qapi.parser`) and a version
and resolves every type reference into objects: :class:`Builtin`, :class:`EnumType`,
:class:`ArrayType`, :class:`ObjectType` (structs, flat unions, the implicit argument and base
types), :class:`AlternateType`, :class:`Command`, :class:`Event`.

Version availability (our extension of the language): any definition, member, enum value,
union branch or feature may carry ``'qemu-versions': '>=9.1'`` (space-separated bounds, all
must hold). What is not available in the emulated version is simply absent from the model.
Two definitions may share a name if their ranges do not overlap.

Union branches that the schema does not list are empty, as in QEMU. A union marked
``'x-open-branches': true`` instead leaves unlisted branches unchecked (used for the
``BlockdevOptions`` drivers the reference does not implement).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .parser import Expression

#: Integer builtins: name → (minimum, maximum, QEMU's C type name in range errors).
INTEGER_RANGES: dict[str, tuple[int, int, str]] = {
    "int": (-(2**63), 2**63 - 1, "int64"),
    "int8": (-(2**7), 2**7 - 1, "int8_t"),
    "int16": (-(2**15), 2**15 - 1, "int16_t"),
    "int32": (-(2**31), 2**31 - 1, "int32_t"),
    "int64": (-(2**63), 2**63 - 1, "int64"),
    "uint8": (0, 2**8 - 1, "uint8_t"),
    "uint16": (0, 2**16 - 1, "uint16_t"),
    "uint32": (0, 2**32 - 1, "uint32_t"),
    "uint64": (0, 2**64 - 1, "uint64"),
    "size": (0, 2**64 - 1, "uint64"),
}

#: Builtin type name → JSON type as introspection reports it.
BUILTIN_JSON_TYPES: dict[str, str] = {
    "str": "string",
    "number": "number",
    "bool": "boolean",
    "null": "null",
    "any": "value",
    **dict.fromkeys(INTEGER_RANGES, "int"),
}


class QAPISchemaError(Exception):
    """The schema source is inconsistent (unknown type, bad discriminator, ...)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.0"`` → ``(10, 0)``."""
    return tuple(int(part) for part in text.split("."))


_BOUND = re.compile(r"^(>=|<=|>|<|==)(\d+(?:\.\d+)*)$")


def version_matches(condition: str | None, version: tuple[int, ...]) -> bool:
    """Whether ``version`` satisfies a ``'qemu-versions'`` condition (``None`` = always)."""
    if condition is None:
        return True
    for bound in condition.split():
        match = _BOUND.match(bound)
        if match is None:
            raise QAPISchemaError(f"bad version bound {bound!r}")
        op, ref = match.group(1), parse_version(match.group(2))
        ok = {
            ">=": version >= ref,
            "<=": version <= ref,
            ">": version > ref,
            "<": version < ref,
            "==": version == ref,
        }[op]
        if not ok:
            return False
    return True


class Type:
    """Any QAPI type. ``name`` is the schema name (implicit types get ``q_obj_...`` names)."""

    name: str

    @property
    def json_kind(self) -> str:
        """The JSON kind the type accepts, for alternates: string/int/number/boolean/..."""
        raise NotImplementedError


@dataclass(eq=False)
class Builtin(Type):
    """``str``, ``int``, ``uint32``, ``bool``, ``number``, ``null``, ``any``, ``size``, ..."""

    name: str

    @property
    def json_type(self) -> str:
        """The introspection ``json-type``."""
        return BUILTIN_JSON_TYPES[self.name]

    @property
    def json_kind(self) -> str:
        return self.json_type


@dataclass(eq=False)
class EnumMember:
    """One enum value and its features."""

    name: str
    features: list[str] = field(default_factory=list)


@dataclass(eq=False)
class EnumType(Type):
    """An enumeration; on the wire a string from ``members``."""

    name: str
    members: list[EnumMember]
    features: list[str] = field(default_factory=list)

    @property
    def values(self) -> list[str]:
        """The accepted strings, in declaration order."""
        return [m.name for m in self.members]

    @property
    def json_kind(self) -> str:
        return "string"


@dataclass(eq=False)
class ArrayType(Type):
    """``['T']``: a JSON array of ``element``."""

    element: Type

    @property
    def name(self) -> str:  # type: ignore[override]  # derived, not stored
        return f"{self.element.name}List"

    @property
    def json_kind(self) -> str:
        return "array"


@dataclass(eq=False)
class Member:
    """A struct/union member (``optional`` for ``'*name'``)."""

    name: str
    type: Type
    optional: bool = False
    features: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Variant:
    """A union branch: when the tag is ``case``, ``type``'s members are present too."""

    case: str
    type: ObjectType


@dataclass(eq=False)
class ObjectType(Type):
    """A struct or flat union (or an implicit one: a command's arguments, a union's base).

    ``members`` are the object's own members; :meth:`all_members` prepends the base's.
    """

    name: str
    members: list[Member] = field(default_factory=list)
    base: ObjectType | None = None
    tag: str | None = None
    variants: list[Variant] = field(default_factory=list)
    open_branches: bool = False
    features: list[str] = field(default_factory=list)
    implicit: bool = False
    is_union: bool = False

    def all_members(self) -> list[Member]:
        """Base members first (recursively), then the object's own: QEMU's visiting order."""
        base = self.base.all_members() if self.base is not None else []
        return base + self.members

    def variant(self, case: str) -> Variant | None:
        """The branch for tag value ``case``, or ``None`` (an empty branch)."""
        for variant in self.variants:
            if variant.case == case:
                return variant
        return None

    @property
    def json_kind(self) -> str:
        return "object"


@dataclass(eq=False)
class Alternative:
    """One branch of an alternate."""

    name: str
    type: Type


@dataclass(eq=False)
class AlternateType(Type):
    """A value that may be one of several JSON kinds, told apart by its kind."""

    name: str
    alternatives: list[Alternative]
    features: list[str] = field(default_factory=list)

    def branch_for(self, kind: str) -> Alternative | None:
        """The branch accepting JSON kind ``kind`` (string/number/boolean/null/object/array)."""
        for alt in self.alternatives:
            alt_kind = alt.type.json_kind
            if alt_kind == kind or (kind == "number" and alt_kind == "int"):
                return alt
        return None

    @property
    def json_kind(self) -> str:
        return "value"


@dataclass(eq=False)
class Command:
    """A QMP command. ``arg_type`` is ``None`` for commands without arguments."""

    name: str
    arg_type: ObjectType | None
    ret_type: Type | None
    boxed: bool = False
    features: list[str] = field(default_factory=list)
    allow_oob: bool = False
    allow_preconfig: bool = False


@dataclass(eq=False)
class Event:
    """A QMP event and its ``data`` type."""

    name: str
    arg_type: ObjectType | None
    boxed: bool = False
    features: list[str] = field(default_factory=list)


@dataclass
class Schema:
    """Every entity available in one emulated version."""

    version: tuple[int, ...]
    types: dict[str, Type] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)

    def lookup_type(self, name: str) -> Type:
        """The type called ``name`` (``KeyError`` if absent in this version)."""
        return self.types[name]

    def has_command(self, name: str) -> bool:
        """Whether ``name`` is a command of this version."""
        return name in self.commands

    def check_arguments(self, command: str, arguments: object) -> dict[str, Any]:
        """Check ``arguments`` of ``command`` exactly as QEMU's QMP marshaller would.

        Returns ``arguments`` unchanged (``{}`` for ``None``; no defaults are filled in).
        Raises :class:`reference.qapi.QAPIError` with QEMU's class and ``desc`` for the first
        problem in QEMU's order, and :class:`UnknownCommand` (a ``LookupError``) when the
        command does not exist in this version: reporting that is the dispatcher's job.
        """
        # validate.py builds on this module's types, so it can only be imported here.
        from .validate import GENERIC_ERROR, QAPIError, check_command_arguments  # noqa: PLC0415

        cmd = self.commands.get(command)
        if cmd is None:
            raise UnknownCommand(command)
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise QAPIError(GENERIC_ERROR, "QMP input member 'arguments' must be an object")
        check_command_arguments(cmd, arguments)
        return arguments


class UnknownCommand(LookupError):
    """:meth:`Schema.check_arguments` was asked about a command this version does not have."""


_META_KEYS = ("command", "struct", "union", "alternate", "enum", "event")


def _meta(expr: dict[str, Any]) -> tuple[str, str]:
    for key in _META_KEYS:
        if key in expr:
            return key, expr[key]
    raise QAPISchemaError(f"expression without a meta-type: {expr!r}")


class _Builder:
    def __init__(self, exprs: list[Expression], version: tuple[int, ...]) -> None:
        self.version = version
        self.schema = Schema(version)
        self.defs: dict[str, tuple[str, dict[str, Any]]] = {}
        for item in exprs:
            expr = item.expr
            if not self.available(expr):
                continue
            meta, name = _meta(expr)
            if meta in ("command", "event"):
                continue
            if name in self.defs:
                raise QAPISchemaError(f"{name} defined twice for version {version}")
            self.defs[name] = (meta, expr)
        self.exprs = [e.expr for e in exprs if self.available(e.expr)]

    def available(self, node: Any) -> bool:
        if isinstance(node, dict):
            return version_matches(node.get("qemu-versions"), self.version)
        return True

    def features(self, raw: list[Any] | None) -> list[str]:
        out: list[str] = []
        for feat in raw or []:
            if isinstance(feat, str):
                out.append(feat)
            elif self.available(feat):
                out.append(feat["name"])
        return out

    def build(self) -> Schema:
        for name in BUILTIN_JSON_TYPES:
            self.schema.types[name] = Builtin(name)
        for name in self.defs:
            self.resolve(name)
        for expr in self.exprs:
            meta, name = _meta(expr)
            if meta == "command":
                self.command(expr)
            elif meta == "event":
                self.event(expr)
        return self.schema

    def ref(self, spec: Any, owner: str) -> Type:
        if isinstance(spec, list):
            if len(spec) != 1:
                raise QAPISchemaError(f"{owner}: array type must name one element type")
            return ArrayType(self.ref(spec[0], owner))
        if isinstance(spec, str):
            return self.resolve(spec)
        raise QAPISchemaError(f"{owner}: bad type reference {spec!r}")

    def resolve(self, name: str) -> Type:
        if name in self.schema.types:
            return self.schema.types[name]
        if name not in self.defs:
            raise QAPISchemaError(f"unknown type {name!r} in version {self.version}")
        meta, expr = self.defs[name]
        if meta == "enum":
            members = [
                EnumMember(v, [])
                if isinstance(v, str)
                else EnumMember(v["name"], self.features(v.get("features")))
                for v in expr["data"]
                if self.available(v)
            ]
            enum = EnumType(name, members, self.features(expr.get("features")))
            self.schema.types[name] = enum
            return enum
        if meta == "alternate":
            alt = AlternateType(name, [], self.features(expr.get("features")))
            self.schema.types[name] = alt
            for bname, spec in expr["data"].items():
                if not self.available(spec):
                    continue
                tspec = spec["type"] if isinstance(spec, dict) else spec
                alt.alternatives.append(Alternative(bname, self.ref(tspec, name)))
            return alt
        obj = ObjectType(name, features=self.features(expr.get("features")))
        self.schema.types[name] = obj  # before members: types may be recursive
        self.fill_object(obj, expr, meta)
        return obj

    def members(self, data: dict[str, Any], owner: str) -> list[Member]:
        out: list[Member] = []
        for key, spec in data.items():
            if not self.available(spec):
                continue
            optional = key.startswith("*")
            mname = key[1:] if optional else key
            if isinstance(spec, dict):
                out.append(
                    Member(
                        mname,
                        self.ref(spec["type"], owner),
                        optional,
                        self.features(spec.get("features")),
                    )
                )
            else:
                out.append(Member(mname, self.ref(spec, owner), optional))
        return out

    def fill_object(self, obj: ObjectType, expr: dict[str, Any], meta: str) -> None:
        base = expr.get("base")
        if isinstance(base, dict):
            implicit = ObjectType(f"q_obj_{obj.name}-base", implicit=True)
            implicit.members = self.members(base, obj.name)
            obj.base = implicit
        elif isinstance(base, str):
            base_type = self.resolve(base)
            if not isinstance(base_type, ObjectType):
                raise QAPISchemaError(f"{obj.name}: base {base} is not an object")
            obj.base = base_type
        if meta == "struct":
            obj.members = self.members(expr.get("data", {}), obj.name)
            return
        obj.is_union = True
        obj.tag = expr["discriminator"]
        obj.open_branches = bool(expr.get("x-open-branches", False))
        tag_member = next((m for m in obj.all_members() if m.name == obj.tag), None)
        if tag_member is None or not isinstance(tag_member.type, EnumType):
            raise QAPISchemaError(f"{obj.name}: discriminator {obj.tag} is not an enum member")
        for case, spec in expr["data"].items():
            if not self.available(spec):
                continue
            tspec = spec["type"] if isinstance(spec, dict) else spec
            btype = self.ref(tspec, obj.name)
            if not isinstance(btype, ObjectType):
                raise QAPISchemaError(f"{obj.name}: branch {case} is not an object")
            if case not in tag_member.type.values:
                raise QAPISchemaError(f"{obj.name}: branch {case} is not a value of the tag")
            obj.variants.append(Variant(case, btype))

    def arg_object(self, expr: dict[str, Any], owner: str) -> ObjectType | None:
        data = expr.get("data")
        if data is None:
            return None
        if isinstance(data, dict):
            implicit = ObjectType(f"q_obj_{owner}-arg", implicit=True)
            implicit.members = self.members(data, owner)
            return implicit
        ref = self.ref(data, owner)
        if not isinstance(ref, ObjectType):
            raise QAPISchemaError(f"{owner}: data must be an object type")
        return ref

    def command(self, expr: dict[str, Any]) -> None:
        name = expr["command"]
        returns = expr.get("returns")
        self.schema.commands[name] = Command(
            name=name,
            arg_type=self.arg_object(expr, name),
            ret_type=None if returns is None else self.ref(returns, name),
            boxed=bool(expr.get("boxed", False)),
            features=self.features(expr.get("features")),
            allow_oob=bool(expr.get("allow-oob", False)),
            allow_preconfig=bool(expr.get("allow-preconfig", False)),
        )

    def event(self, expr: dict[str, Any]) -> None:
        name = expr["event"]
        self.schema.events[name] = Event(
            name=name,
            arg_type=self.arg_object(expr, name),
            boxed=bool(expr.get("boxed", False)),
            features=self.features(expr.get("features")),
        )


def build_schema(exprs: list[Expression], version: str | tuple[int, ...]) -> Schema:
    """Resolve ``exprs`` into the :class:`Schema` of ``version`` (``"10.0"`` or ``(10, 0)``)."""
    ver = parse_version(version) if isinstance(version, str) else version
    return _Builder(exprs, ver).build()
