"""Argument checking with QEMU's exact errors, in QEMU's order.

This re-enacts what QEMU's generated ``qmp_marshal_*`` functions do with the QObject input
visitor (behaviour re-described from observation and QEMU's documentation, confirmed against
real QEMU 7.2 and 10.0 by ``tests/reference/qapi/test_differential.py``):

* Members are visited in declaration order, base members first, then the members of the union
  branch the (already checked) tag selects. The first error wins.
* Unknown keys are reported only when a whole object was visited (``check_struct``), so an error
  deeper inside an object beats an unexpected key next to it. When several keys are unknown,
  QEMU names the first one in GLib hash-table order; :class:`_KeyTable` reproduces that order.
* Most messages carry the full path of the value (``actions[0].data.name``), but a few use only
  the member's own name, or ``null`` for list elements: bad enum values, integer range errors
  for the narrow types (``uint32_t`` ...), and alternate mismatches.

Error strings (all ``GenericError``)::

    Parameter '%s' is missing                     (full path)
    Parameter '%s' is unexpected                  (full path)
    Invalid parameter type for '%s', expected: %s (full path; string, integer, number,
                                                   boolean, null, object, array)
    Parameter '%s' expects uint64                 (full path; uint64 and size)
    Parameter '%s' expects uint32_t               (own name or 'null'; also int32_t, ...)
    Parameter '%s' does not accept value '%s'     (own name or 'null')
    Invalid parameter type for '%s', expected: T  (own name or 'null'; T an alternate)

This module must not look at what the arguments mean (node names, sizes): that is the
engine's job, after checking succeeded.
"""

from __future__ import annotations

from typing import Any

from .schema import (
    INTEGER_RANGES,
    AlternateType,
    ArrayType,
    Builtin,
    Command,
    EnumType,
    ObjectType,
    Type,
)

GENERIC_ERROR = "GenericError"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


class QAPIError(Exception):
    """An argument-checking failure, with QEMU's error class and ``desc`` verbatim."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc

    def reply(self) -> dict[str, Any]:
        """The ``{"error": ...}`` QMP reply body."""
        return {"error": {"class": self.error_class, "desc": self.desc}}

    def __repr__(self) -> str:
        return f"QAPIError({self.error_class!r}, {self.desc!r})"


def _fail(desc: str) -> QAPIError:
    return QAPIError(GENERIC_ERROR, desc)


# --- GLib hash-table iteration order --------------------------------------------------------
#
# QEMU collects an object's keys into a GLib hash table (in the order of its QDict), removes the
# keys it visits, and reports the first key left when iterating the table. Both orders are
# hash orders; the functions below recompute them (QDict: 512 buckets, tdb hash, newest first
# within a bucket; GHashTable: open addressing with quadratic probing, in-place resizing).

_MASK32 = 0xFFFFFFFF
_QDICT_BUCKETS = 512
_PRIME_MOD = [1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749]
_MIN_SHIFT = 3
_UNUSED, _TOMBSTONE = 0, 1


def _tdb_hash(key: str) -> int:
    data = key.encode("utf-8")
    value = (0x238F13AF * len(data)) & _MASK32
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & _MASK32
    return (1103515243 * value + 12345) & _MASK32


def qdict_order(keys: list[str]) -> list[str]:
    """The iteration order of a QDict built by inserting ``keys`` in order."""
    buckets: dict[int, list[str]] = {}
    for key in keys:
        buckets.setdefault(_tdb_hash(key) % _QDICT_BUCKETS, []).insert(0, key)
    return [key for bucket in sorted(buckets) for key in buckets[bucket]]


def _g_str_hash(key: str) -> int:
    h = 5381
    for byte in key.encode("utf-8"):
        signed = byte - 256 if byte > 127 else byte
        h = (h * 33 + signed) & _MASK32
    return h


class _KeyTable:
    """A GLib ``GHashTable`` of strings (``g_str_hash``), enough to know its iteration order."""

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [_UNUSED] * self.size
        self.keys: list[str | None] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIME_MOD[shift]
        self.mask = self.size - 1

    @staticmethod
    def _hash(key: str) -> int:
        h = _g_str_hash(key)
        return 2 if h < 2 else h

    def _index(self, h: int) -> int:
        return (h * 11 & _MASK32) % self.mod

    def _lookup(self, key: str, h: int) -> int:
        index = self._index(h)
        step = 0
        tombstone: int | None = None
        while self.hashes[index] != _UNUSED:
            if self.hashes[index] == h and self.keys[index] == key:
                return index
            if self.hashes[index] == _TOMBSTONE and tombstone is None:
                tombstone = index
            step += 1
            index = (index + step) & self.mask
        return tombstone if tombstone is not None else index

    def insert(self, key: str) -> None:
        """``g_hash_table_insert`` (re-inserting an existing key keeps its slot)."""
        h = self._hash(key)
        index = self._lookup(key, h)
        old = self.hashes[index]
        if old >= 2:
            return
        self.hashes[index] = h
        self.keys[index] = key
        self.nnodes += 1
        if old == _UNUSED:
            self.noccupied += 1
            self._maybe_resize()

    def remove(self, key: str) -> None:
        """``g_hash_table_remove``."""
        h = self._hash(key)
        index = self._lookup(key, h)
        if self.hashes[index] < 2:
            return
        self.hashes[index] = _TOMBSTONE
        self.keys[index] = None
        self.nnodes -= 1
        self._maybe_resize()

    def _maybe_resize(self) -> None:
        size, occ = self.size, self.noccupied
        if (size > self.nnodes * 4 and size > 1 << _MIN_SHIFT) or size <= occ + occ // 16:
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        target = int(self.nnodes * 1.333)
        shift = max(target.bit_length(), _MIN_SHIFT)
        self._set_shift(shift)
        if self.size > old_size:
            self.hashes += [_UNUSED] * (self.size - old_size)
            self.keys += [None] * (self.size - old_size)
        moved = [False] * max(self.size, old_size)
        for i in range(old_size):
            node_hash = self.hashes[i]
            if node_hash < 2:
                self.hashes[i] = _UNUSED
                continue
            if moved[i]:
                continue
            self.hashes[i] = _UNUSED
            key = self.keys[i]
            self.keys[i] = None
            while True:
                index = self._index(node_hash)
                step = 0
                while moved[index]:
                    step += 1
                    index = (index + step) & self.mask
                moved[index] = True
                replaced_hash, replaced_key = self.hashes[index], self.keys[index]
                self.hashes[index], self.keys[index] = node_hash, key
                if replaced_hash < 2:
                    break
                node_hash, key = replaced_hash, replaced_key
        if self.size < old_size:
            del self.hashes[self.size :]
            del self.keys[self.size :]
        self.noccupied = self.nnodes

    def first(self) -> str | None:
        """The first key ``g_hash_table_iter_next`` returns."""
        for h, key in zip(self.hashes, self.keys, strict=True):
            if h >= 2:
                return key
        return None


# --- The visitor ------------------------------------------------------------------------------


class _Frame:
    """One open container, as QEMU's visitor stack keeps it."""

    __slots__ = ("index", "name", "obj", "pos", "table")

    def __init__(self, obj: Any, name: str | None) -> None:
        self.obj = obj
        self.name = name
        self.index = -1
        self.pos = 0
        self.table: _KeyTable | None = None
        if isinstance(obj, dict):
            self.table = _KeyTable()
            for key in qdict_order(list(obj)):
                self.table.insert(key)


_MISSING = object()


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "unknown"


class _Visitor:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.stack: list[_Frame] = []

    # QEMU's full_name(): the path of member ``name`` of the innermost open container.
    def full_name(self, name: str | None) -> str:
        out = ""
        for frame in reversed(self.stack):
            if isinstance(frame.obj, dict):
                out = "." + (name if name is not None else "<anonymous>") + out
            else:
                out = f"[{frame.index}]" + out
            name = frame.name
        if name is not None:
            return name + out
        if out.startswith("."):
            return out[1:]
        return out or "<anonymous>"

    def get(self, name: str | None, consume: bool) -> Any:
        if not self.stack:
            return self.root
        top = self.stack[-1]
        if isinstance(top.obj, dict):
            assert name is not None
            value = top.obj.get(name, _MISSING)
            if consume and value is not _MISSING and top.table is not None:
                top.table.remove(name)
        else:
            value = top.obj[top.pos] if top.pos < len(top.obj) else _MISSING
            if consume:
                top.pos += 1
                top.index += 1
        if value is _MISSING:
            raise _fail(f"Parameter '{self.full_name(name)}' is missing")
        return value

    def type_error(self, name: str | None, expected: str) -> QAPIError:
        return _fail(f"Invalid parameter type for '{self.full_name(name)}', expected: {expected}")

    # --- scalars
    def visit_builtin(self, typ: Builtin, name: str | None) -> None:
        value = self.get(name, consume=True)
        kind = typ.name
        if kind == "any":
            return
        if kind == "str":
            if not isinstance(value, str):
                raise self.type_error(name, "string")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise self.type_error(name, "boolean")
        elif kind == "null":
            if value is not None:
                raise self.type_error(name, "null")
        elif kind == "number":
            if _json_kind(value) != "number":
                raise self.type_error(name, "number")
        elif kind in ("uint8", "uint16", "uint32", "uint64", "size"):
            self.visit_unsigned(kind, value, name)
        else:
            self.visit_signed(kind, value, name)

    def visit_signed(self, kind: str, value: Any, name: str | None) -> None:
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _INT64_MIN <= value <= _INT64_MAX
        ):
            raise self.type_error(name, "integer")
        low, high, ctype = INTEGER_RANGES[kind]
        if not low <= value <= high:
            raise _fail(f"Parameter '{name if name is not None else 'null'}' expects {ctype}")

    def visit_unsigned(self, kind: str, value: Any, name: str | None) -> None:
        # Negative numbers are accepted and wrap around (QEMU keeps this for compatibility).
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _INT64_MIN <= value <= _UINT64_MAX
        ):
            raise _fail(f"Parameter '{self.full_name(name)}' expects uint64")
        _, high, ctype = INTEGER_RANGES[kind]
        if value % 2**64 > high:
            raise _fail(f"Parameter '{name if name is not None else 'null'}' expects {ctype}")

    def visit_enum(self, typ: EnumType, name: str | None) -> str:
        value = self.get(name, consume=True)
        if not isinstance(value, str):
            raise self.type_error(name, "string")
        if value not in typ.values:
            shown = name if name is not None else "null"
            raise _fail(f"Parameter '{shown}' does not accept value '{value}'")
        return value

    # --- containers
    def visit_array(self, typ: ArrayType, name: str | None) -> None:
        value = self.get(name, consume=True)
        if not isinstance(value, list):
            raise self.type_error(name, "array")
        self.stack.append(_Frame(value, name))
        for _ in range(len(value)):
            self.visit(typ.element, None)
        self.stack.pop()

    def start_struct(self, name: str | None) -> None:
        value = self.get(name, consume=True)
        if not isinstance(value, dict):
            raise self.type_error(name, "object")
        self.stack.append(_Frame(value, name))

    def end_struct(self, check: bool) -> None:
        top = self.stack[-1]
        if check and top.table is not None:
            key = top.table.first()
            if key is not None:
                raise _fail(f"Parameter '{self.full_name(key)}' is unexpected")
        self.stack.pop()

    def visit_object(self, typ: ObjectType, name: str | None) -> None:
        self.start_struct(name)
        check = self.visit_members(typ)
        self.end_struct(check)

    def visit_members(self, typ: ObjectType) -> bool:
        """Visit ``typ``'s members into the open object; False if unknown keys are allowed."""
        top = self.stack[-1].obj
        tag_value: str | None = None
        for member in typ.all_members():
            if member.optional and member.name not in top:
                continue
            if isinstance(member.type, EnumType) and member.name == typ.tag:
                tag_value = self.visit_enum(member.type, member.name)
            else:
                self.visit(member.type, member.name)
        if typ.tag is None:
            return True
        assert tag_value is not None
        variant = typ.variant(tag_value)
        if variant is None:
            return not typ.open_branches
        return self.visit_members(variant.type)

    def visit_alternate(self, typ: AlternateType, name: str | None) -> None:
        value = self.get(name, consume=False)
        branch = typ.branch_for(_json_kind(value))
        if branch is None:
            shown = name if name is not None else "null"
            raise _fail(f"Invalid parameter type for '{shown}', expected: {typ.name}")
        self.visit(branch.type, name)

    def visit(self, typ: Type, name: str | None) -> None:
        if isinstance(typ, Builtin):
            self.visit_builtin(typ, name)
        elif isinstance(typ, EnumType):
            self.visit_enum(typ, name)
        elif isinstance(typ, ArrayType):
            self.visit_array(typ, name)
        elif isinstance(typ, ObjectType):
            self.visit_object(typ, name)
        elif isinstance(typ, AlternateType):
            self.visit_alternate(typ, name)
        else:  # pragma: no cover - every Type subclass is handled above
            raise TypeError(f"cannot visit {typ!r}")


def check_command_arguments(command: Command, arguments: dict[str, Any]) -> None:
    """Visit ``arguments`` as ``command``'s marshaller would; raise :class:`QAPIError`."""
    visitor = _Visitor(arguments)
    visitor.start_struct(None)
    check = True
    if command.arg_type is not None:
        check = visitor.visit_members(command.arg_type)
    visitor.end_struct(check)


def check_value(typ: Type, value: Any) -> None:
    """Visit a whole value of ``typ`` (the root has no name); raise :class:`QAPIError`."""
    _Visitor(value).visit(typ, None)
