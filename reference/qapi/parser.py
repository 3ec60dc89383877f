"""Reader for QAPI's schema language: JSON-like expressions with single quotes and comments.

The language (as QEMU's ``scripts/qapi`` defines it, reimplemented here from its documented
rules): a file is a sequence of top-level objects; strings use single quotes; ``true`` and
``false`` are the only bare words; ``#`` starts a comment running to the end of the line; an
expression ``{ 'include': 'file.json' }`` pulls in another file (relative to the including
file, each file at most once).

This module only turns text into ordered Python values, remembering where each expression came
from. It knows nothing about what a command or a struct is: :mod:`reference.qapi.schema` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A parsed value: str, bool, list or dict (dicts keep the source order).
Value = Any


class QAPIParseError(Exception):
    """The schema text is not valid: carries ``file:line:col`` in its message."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path = path
        self.line = line
        self.col = col


@dataclass(frozen=True)
class Expression:
    """One top-level expression and where it was read."""

    expr: dict[str, Value]
    path: Path
    line: int


_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "/": "/", "n": "\n", "t": "\t"}


class _Lexer:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def error(self, message: str) -> QAPIParseError:
        return QAPIParseError(self.path, self.line, self.pos - self.line_start + 1, message)

    def skip_space(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
            elif ch in " \t\r":
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            found = self.peek() or "end of file"
            raise self.error(f"expected {ch!r}, found {found!r}")
        self.pos += 1

    def string(self) -> str:
        self.expect("'")
        out: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error("unterminated string")
            ch = text[self.pos]
            self.pos += 1
            if ch == "'":
                return "".join(out)
            if ch == "\\":
                esc = text[self.pos : self.pos + 1]
                if esc not in _ESCAPES:
                    raise self.error(f"unknown escape \\{esc}")
                out.append(_ESCAPES[esc])
                self.pos += 1
            else:
                out.append(ch)

    def value(self) -> Value:
        ch = self.peek()
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.array()
        if ch == "'":
            return self.string()
        for word, val in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return val
        raise self.error(f"unexpected {ch or 'end of file'!r}")

    def obj(self) -> dict[str, Value]:
        self.expect("{")
        out: dict[str, Value] = {}
        if self.peek() == "}":
            self.pos += 1
            return out
        while True:
            key = self.string()
            if key in out:
                raise self.error(f"duplicate key {key!r}")
            self.expect(":")
            out[key] = self.value()
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("}")
            return out

    def array(self) -> list[Value]:
        self.expect("[")
        out: list[Value] = []
        if self.peek() == "]":
            self.pos += 1
            return out
        while True:
            out.append(self.value())
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("]")
            return out


def parse_text(text: str, path: str = "<string>") -> list[tuple[dict[str, Value], int]]:
    """Parse one file's text into its top-level objects and their line numbers."""
    lexer = _Lexer(text, path)
    out: list[tuple[dict[str, Value], int]] = []
    while lexer.peek():
        if lexer.peek() != "{":
            raise lexer.error("top-level expressions must be objects")
        line = lexer.line
        out.append((lexer.obj(), line))
    return out


def parse_file(path: Path) -> list[Expression]:
    """Parse ``path`` and every file it includes, in order; each file is read once."""
    seen: set[Path] = set()
    out: list[Expression] = []

    def visit(file: Path) -> None:
        file = file.resolve()
        if file in seen:
            return
        seen.add(file)
        for expr, line in parse_text(file.read_text(encoding="utf-8"), str(file)):
            if "include" in expr:
                if set(expr) != {"include"} or not isinstance(expr["include"], str):
                    raise QAPIParseError(str(file), line, 1, "malformed include")
                visit(file.parent / expr["include"])
            else:
                out.append(Expression(expr, file, line))

    visit(path)
    return out
