"""JSON Schema (the QAPI-shaped subset :mod:`conformance.schema.jsonschema` emits) → hypothesis.

API::

    from conformance.schema.strategies import Compiler, from_schema

    strategy = from_schema(derived["commands"]["transaction"]["arguments"])
    compiler = Compiler(
        steer={
            "node": st.sampled_from(["disk0", "disk1"]),         # any property called "node"
            "actions[].data.name": st.sampled_from(["b0"]),     # one path (wins over a bare name)
        },
        max_depth=2,      # how deep one recursive type may nest in itself
        max_items=4,      # array length bound (arrays are 0..max_items long)
    )
    strategy = compiler.compile(schema)

:func:`from_schema` is ``Compiler().compile``. ``compile`` raises :class:`Unsatisfiable` when
even the collapsed recursion leaves nothing to generate.

Compiled directly (each keyword to a few lines of drawing code, see "How" below):

=====================================  =====================================================
``{}`` / ``true``                      small JSON values (QEMU's ``any``)
``type`` string/boolean/null           text (no NUL, no lone surrogates: JSON and QEMU's
                                       parser cannot carry them), booleans, ``None``
``type`` integer/number                integers / finite floats within ``minimum``/``maximum``
``enum``, ``const``                    one ``sampled_from`` draw; the constant, no draw
``type: array`` + ``items``            a length in 0..``max_items``, then the items
``type: object`` + ``properties`` +    required values, then one integer drawn as a bit mask
``required`` (+ any                    choosing the optional properties present (keys in
``additionalProperties``)              schema order); open objects get declared keys only
``oneOf`` / ``anyOf``                  an index, then that branch (QAPI's branches are
                                       disjoint: distinct tag ``const`` or JSON type)
``$ref`` to ``#/$defs/NAME``           bounded recursion, below
=====================================  =====================================================

How: the schema is compiled once into a tree of plain Python functions that call hypothesis'
``draw`` only at the leaves (text, integers, booleans, sampled_from, an index, a mask), under a
single ``st.composite``. Nesting hypothesis strategies one per keyword (fixed_dictionaries,
one_of, tuples, map) spends most of the time on hypothesis' per-draw bookkeeping; this way a
``transaction`` argument object costs about a dozen primitive draws. Shrinking still works on
the choice sequence (masks and indices shrink towards fewer properties and the first branch).

Anything else (``pattern``, ``allOf``, ``not``, ``if``, ``minItems``, ...) is handed, with the
root's ``$defs``, to ``hypothesis_jsonschema.from_schema`` (:attr:`Compiler.fallbacks` counts
those; the converter's output needs none). hypothesis-jsonschema 0.23.1 (the latest) calls
``many.more()``, which hypothesis removed in 6.156, so pyproject.toml pins hypothesis below it.
Annotations (``$schema``, ``title``, ``description``, ``deprecated``,
``default``, ``$comment``, ``examples``) are ignored.

Recursion: a ``$ref`` may be expanded while its definition occurs fewer than ``max_depth``
times among the ``$ref`` expansions enclosing it. Past that, the ``$ref`` is *impossible*, and
impossibility propagates: an impossible ``oneOf`` branch is dropped, an impossible optional
property is left out, an impossible array item allows only ``[]``, an impossible required
property makes its object impossible. So ``BlockdevRef`` (an alternate of ``BlockdevOptions``
and ``str``) collapses to its ``str`` branch at the bound, and a blockdev-add tree is at most
``max_depth`` nodes high.

Steering: ``steer`` maps a property name, or a path, to a strategy used *instead of* the
schema's for that property. Paths are property names joined by ``.``; an array's items add
``[]``; ``oneOf`` branches and ``$ref`` add nothing (``actions[].data.node`` is every action's
``node``). A path entry wins over a bare name. Steered strategies are trusted to produce values
the schema accepts (mix in the schema's own strategy via :meth:`Compiler.compile_at` to keep
some unsteered values).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import hypothesis_jsonschema
from hypothesis import strategies as st

__all__ = ["Compiler", "Unsatisfiable", "from_schema", "json_values", "qmp_text"]

Strategy = st.SearchStrategy[Any]
JSONSchema = Mapping[str, Any]

#: Keywords with no effect on validation.
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "deprecated", "default", "examples"}
)
_TYPES = frozenset({"string", "boolean", "null", "integer", "number", "array", "object"})
_KEYWORDS: dict[str, frozenset[str]] = {
    "string": frozenset({"type"}),
    "boolean": frozenset({"type"}),
    "null": frozenset({"type"}),
    "integer": frozenset({"type", "minimum", "maximum"}),
    "number": frozenset({"type", "minimum", "maximum"}),
    "array": frozenset({"type", "items"}),
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
}


class Unsatisfiable(ValueError):
    """Nothing can be generated (e.g. recursion with no terminating branch within the bound)."""


def qmp_text() -> st.SearchStrategy[str]:
    """Strings QMP can carry: any code point except NUL and surrogates."""
    return st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


def json_values() -> Strategy:
    """Small arbitrary JSON values (for QEMU's ``any``)."""
    leaves: Strategy = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        qmp_text(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(qmp_text(), inner, max_size=3)
        ),
        max_leaves=5,
    )


Draw = Callable[[st.SearchStrategy[Any]], Any]
#: The ``$ref`` targets being expanded around a subschema, outermost first.
Stack = tuple[str, ...]
Nesting = tuple[tuple[str, int], ...]
Gen = Callable[[Draw], Any]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@st.composite
def _generated(draw: Draw, gen: Gen) -> Any:
    return gen(draw)


class Compiler:
    """Compiles schemas to strategies; see the module docstring for the subset and options."""

    def __init__(
        self,
        steer: Mapping[str, Strategy] | None = None,
        *,
        max_depth: int = 2,
        max_items: int = 3,
    ) -> None:
        self.steer = dict(steer or {})
        self.max_depth = max_depth
        self.max_items = max_items
        self.lengths = st.integers(0, max_items)
        #: How many subschemas went to hypothesis_jsonschema (for benchmarks and tests).
        self.fallbacks = 0

    def compile(self, schema: JSONSchema | bool) -> Strategy:
        """A strategy for ``schema`` (a root: its ``$defs`` are the ones ``$ref`` reaches)."""
        return self.compile_at(schema, "")

    def compile_at(self, schema: JSONSchema | bool, path: str) -> Strategy:
        """Like :meth:`compile`, for a schema found at ``path`` (steering sees that path)."""
        defs = schema.get("$defs", {}) if isinstance(schema, Mapping) else {}
        gen = _Run(self, defs).compile(schema, path, ())
        if gen is None:
            raise Unsatisfiable(f"no value within recursion depth {self.max_depth}")
        return _generated(gen)


def from_schema(schema: JSONSchema | bool) -> Strategy:
    """:meth:`Compiler.compile` with default options and no steering."""
    return Compiler().compile(schema)


def _leaf(strategy: Strategy) -> Gen:
    def gen(draw: Draw) -> Any:
        return draw(strategy)

    return gen


def _constant(value: Any) -> Gen:
    def gen(draw: Draw) -> Any:
        return value

    return gen


def _choice(branches: list[Gen]) -> Gen:
    if len(branches) == 1:
        return branches[0]
    index = st.integers(0, len(branches) - 1)

    def gen(draw: Draw) -> Any:
        return branches[draw(index)](draw)

    return gen


def _array(item: Gen, lengths: st.SearchStrategy[int]) -> Gen:
    def gen(draw: Draw) -> Any:
        return [item(draw) for _ in range(draw(lengths))]

    return gen


def _object(required: list[tuple[str, Gen]], optional: list[tuple[str, Gen]]) -> Gen:
    mask = st.integers(0, 2 ** len(optional) - 1)

    def gen(draw: Draw) -> Any:
        value = {key: item(draw) for key, item in required}
        if optional:
            chosen = draw(mask)
            for bit, (key, item) in enumerate(optional):
                if chosen >> bit & 1:
                    value[key] = item(draw)
        return value

    return gen


class _Run:
    """One root's compilation: resolves ``$ref`` against that root's ``$defs``."""

    def __init__(self, compiler: Compiler, defs: Mapping[str, JSONSchema]) -> None:
        self.compiler = compiler
        self.defs = defs
        self.feasible_memo: dict[tuple[str, Nesting], bool] = {}

    # --- feasibility: can a schema produce a value within the recursion bound? --------------

    def allowed(self, ref: str, stack: Stack) -> bool:
        """Whether ``ref`` may be expanded inside the expansions ``stack``."""
        return stack.count(ref) < self.compiler.max_depth

    def feasible(self, schema: JSONSchema | bool, stack: Stack) -> bool:
        if isinstance(schema, bool):
            return schema
        if "$ref" in schema:
            ref = str(schema["$ref"])
            if not self.allowed(ref, stack):
                return False
            # only how often each definition is open matters, not the order
            key = (ref, tuple(sorted(Counter(stack).items())))
            if key not in self.feasible_memo:
                self.feasible_memo[key] = False  # a cycle with no way out is not feasible
                self.feasible_memo[key] = self.feasible(self.resolve(ref), (*stack, ref))
            return self.feasible_memo[key]
        for keyword in ("oneOf", "anyOf"):
            if keyword in schema:
                return any(self.feasible(b, stack) for b in schema[keyword])
        if schema.get("type") == "object":
            properties = schema.get("properties", {})
            required = schema.get("required", ())
            return all(self.feasible(properties.get(r, True), stack) for r in required)
        return True

    def resolve(self, ref: str) -> JSONSchema:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix) :] not in self.defs:
            raise Unsatisfiable(f"cannot resolve $ref {ref!r}")
        resolved: JSONSchema = self.defs[ref[len(prefix) :]]
        return resolved

    # --- compilation ------------------------------------------------------------------------

    def steered(self, path: str) -> Strategy | None:
        steer = self.compiler.steer
        if path in steer:
            return steer[path]
        name = path.rsplit(".", 1)[-1]
        return None if name.endswith("[]") else steer.get(name)

    def compile(self, schema: JSONSchema | bool, path: str, stack: Stack) -> Gen | None:
        """A generator, or ``None`` when nothing fits within the recursion bound."""
        if schema is True:
            return _leaf(json_values())
        if schema is False:
            return None
        assert isinstance(schema, Mapping)
        keys = set(schema) - ANNOTATIONS - {"$defs"}
        if not keys:
            return _leaf(json_values())
        if keys == {"$ref"}:
            return self.reference(schema["$ref"], path, stack)
        for keyword in ("oneOf", "anyOf"):
            if keys == {keyword}:
                branches = [self.compile(b, path, stack) for b in schema[keyword]]
                usable = [b for b in branches if b is not None]
                return _choice(usable) if usable else None
        if "const" in keys and keys <= {"const", "type"}:
            return _constant(schema["const"])
        if "enum" in keys and keys <= {"enum", "type"} and schema["enum"]:
            return _leaf(st.sampled_from(list(schema["enum"])))
        kind = schema.get("type")
        if isinstance(kind, str) and kind in _TYPES and keys <= _KEYWORDS[kind]:
            compiled = self.typed(kind, schema, path, stack)
            if compiled is not NotImplemented:
                return compiled  # type: ignore[no-any-return]
        return self.fallback(schema)

    def reference(self, ref: str, path: str, stack: Stack) -> Gen | None:
        if not self.feasible({"$ref": ref}, stack):
            return None
        target = self.resolve(ref)
        compiled: list[Gen] = []

        def gen(draw: Draw) -> Any:
            # Compiled when first drawn: eager expansion of every branch of a recursive union
            # (BlockdevOptions) to the depth bound would be wasted on branches never drawn.
            if not compiled:
                inner = self.compile(target, path, (*stack, ref))
                assert inner is not None  # feasible() said so
                compiled.append(inner)
            return compiled[0](draw)

        return gen

    def typed(self, kind: str, schema: JSONSchema, path: str, stack: Stack) -> Any:
        if kind == "string":
            return _leaf(_TEXT)
        if kind == "boolean":
            return _leaf(_BOOLEANS)
        if kind == "null":
            return _constant(None)
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            if not all(b is None or isinstance(b, int) for b in (low, high)):
                return NotImplemented
            return _leaf(st.integers(low, high))
        if kind == "number":
            low, high = schema.get("minimum"), schema.get("maximum")
            return _leaf(
                st.floats(
                    None if low is None else float(low),
                    None if high is None else float(high),
                    allow_nan=False,
                    allow_infinity=False,
                )
            )
        if kind == "array":
            items = self.compile(schema.get("items", True), f"{path}[]", stack)
            if items is None:
                return _constant_list()
            return _array(items, self.compiler.lengths)
        return self.object(schema, path, stack)

    def object(self, schema: JSONSchema, path: str, stack: Stack) -> Any:
        # An open object (additionalProperties absent, true or a schema) accepts its declared
        # properties alone, so generating only those stays valid.
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        if not required <= set(properties):
            return NotImplemented
        fixed: list[tuple[str, Gen]] = []
        optional: list[tuple[str, Gen]] = []
        for name, subschema in properties.items():
            where = _join(path, name)
            steered = self.steered(where)
            gen = _leaf(steered) if steered is not None else self.compile(subschema, where, stack)
            if gen is None:
                if name in required:
                    return None
                continue
            (fixed if name in required else optional).append((name, gen))
        return _object(fixed, optional)

    def fallback(self, schema: JSONSchema) -> Gen:
        self.compiler.fallbacks += 1
        root = dict(schema)
        if self.defs and "$defs" not in root:
            root["$defs"] = dict(self.defs)
        return _leaf(hypothesis_jsonschema.from_schema(root))


def _constant_list() -> Gen:
    def gen(draw: Draw) -> Any:
        return []

    return gen


_TEXT = qmp_text()
_BOOLEANS = st.booleans()
