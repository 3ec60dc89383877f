"""QEMU's JSON dialect, byte for byte: a streaming lexer, the message streamer, a parser, a writer.

QMP clients see QEMU's own JSON implementation (``qobject/json-lexer.c``, ``json-streamer.c``,
``json-parser.c``, ``json-writer.c``, ``qdict.c``), not RFC 8259.  The differences are visible on
the wire and this module reproduces them:

- single-quoted strings and the ``\\'`` escape are accepted; strings must be valid *modified*
  UTF-8 (``\\xC0\\x80`` is U+0000) without surrogates or noncharacters;
- a message ends as soon as its braces and brackets balance (or go negative), so ``3`` waits for
  a byte that ends the number and ``nul`` + ``l`` parses as ``null``;
- after a lexical error the lexer skips input until a structural character (``[]{}:,``), an ASCII
  control character other than tab, or the impossible bytes 0xFE/0xFF;
- limits: 64 MiB of token text, 2 Mi tokens and nesting depth 1024 per message;
- every object is written in ``QDict`` order: hash bucket (``tdb_hash`` mod 512) first, the most
  recently inserted key first within a bucket; numbers ``%.17g``; non-ASCII as ``\\uXXXX``.

The parser returns plain Python values: ``dict`` (keys in input order), ``list``, ``str``,
``int`` (QEMU's int64 and uint64), ``float``, ``bool`` and ``None``.  It must not know about QMP.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

__all__ = [
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "JSONParseError",
    "MessageStreamer",
    "decode_lossy",
    "from_json",
    "qdict_items",
    "to_json",
]

#: ``json-lexer.c`` / ``json-streamer.c``: the most token text one message may hold.
MAX_TOKEN_SIZE: Final = 64 << 20
#: ``json-streamer.c``: the most tokens one message may hold.
MAX_TOKEN_COUNT: Final = 2 << 20
#: ``json-streamer.c``: the deepest ``[``/``{`` nesting one message may have.
MAX_NESTING: Final = 1 << 10
#: ``qdict.h``: the number of hash buckets of a ``QDict``; fixes the order objects are written in.
QDICT_BUCKET_MAX: Final = 512
#: ``json-parser.c``: ``parse_error()`` formats into a ``char[1024]``.
_PARSE_ERROR_BUFFER: Final = 1024


class JSONParseError(Exception):
    """A message QEMU's JSON layer rejects; ``str()`` is QEMU's exact error text."""

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc


# ---------------------------------------------------------------------------------------------
# Lexer (json-lexer.c).  Codes below 0x20 are states, codes from 0x20 are tokens; 0 is an error.
# ---------------------------------------------------------------------------------------------

ERROR: Final = 0
_RECOVERY, _DQ_ESC, _DQ, _SQ_ESC, _SQ, _ZERO, _EXP_DIGITS, _EXP_SIGN, _EXP_E = range(1, 10)
_MANTISSA, _MANTISSA_DIGITS, _DIGITS, _SIGN, _KEYWORD, _START = range(10, 16)
_STATE_COUNT: Final = 16

LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA = range(0x20, 0x26)
INTEGER, FLOAT, KEYWORD, STRING, END_OF_INPUT, OVERSIZED = range(0x26, 0x2C)
_LOOKAHEAD: Final = 0x80

_STRUCTURAL: Final = {
    ord("{"): LCURLY,
    ord("}"): RCURLY,
    ord("["): LSQUARE,
    ord("]"): RSQUARE,
    ord(":"): COLON,
    ord(","): COMMA,
}


def _build_table() -> list[bytearray]:
    table = [bytearray(256) for _ in range(_STATE_COUNT)]  # default: ERROR

    def put(state: int, chars: bytes | range, code: int) -> None:
        for c in chars:
            table[state][c] = code

    def terminal(state: int, token: int) -> None:
        put(state, range(256), token | _LOOKAHEAD)

    digits = b"0123456789"
    # Recovery: skip to a structural character, a control character but tab, or 0xFE/0xFF.
    put(_RECOVERY, range(0x00, 0x20), _START | _LOOKAHEAD)
    put(_RECOVERY, range(0x20, 0xFE), _RECOVERY)
    put(_RECOVERY, b"\xfe\xff", _START | _LOOKAHEAD)
    put(_RECOVERY, b"\t", _RECOVERY)
    put(_RECOVERY, b"[]{}:,", _START | _LOOKAHEAD)
    for esc, body, quote in ((_DQ_ESC, _DQ, b'"'), (_SQ_ESC, _SQ, b"'")):
        put(esc, range(0x20, 0xFE), body)
        put(body, range(0x20, 0xFE), body)
        put(body, b"\\", esc)
        put(body, quote, STRING)
    terminal(_ZERO, INTEGER)
    put(_ZERO, digits, ERROR)
    put(_ZERO, b".", _MANTISSA)
    terminal(_EXP_DIGITS, FLOAT)
    put(_EXP_DIGITS, digits, _EXP_DIGITS)
    put(_EXP_SIGN, digits, _EXP_DIGITS)
    put(_EXP_E, b"-+", _EXP_SIGN)
    put(_EXP_E, digits, _EXP_DIGITS)
    terminal(_MANTISSA_DIGITS, FLOAT)
    put(_MANTISSA_DIGITS, digits, _MANTISSA_DIGITS)
    put(_MANTISSA_DIGITS, b"eE", _EXP_E)
    put(_MANTISSA, digits, _MANTISSA_DIGITS)
    terminal(_DIGITS, INTEGER)
    put(_DIGITS, digits, _DIGITS)
    put(_DIGITS, b"eE", _EXP_E)
    put(_DIGITS, b".", _MANTISSA)
    put(_SIGN, b"0", _ZERO)
    put(_SIGN, b"123456789", _DIGITS)
    terminal(_KEYWORD, KEYWORD)
    put(_KEYWORD, range(ord("a"), ord("z") + 1), _KEYWORD)
    put(_START, b'"', _DQ)
    put(_START, b"'", _SQ)
    put(_START, b"0", _ZERO)
    put(_START, b"123456789", _DIGITS)
    put(_START, b"-", _SIGN)
    for char, token in _STRUCTURAL.items():
        table[_START][char] = token
    put(_START, range(ord("a"), ord("z") + 1), _KEYWORD)
    put(_START, b" \t\r\n", _START)
    return table


_TABLE: Final = _build_table()

# Runs of bytes that leave a state unchanged: consumed in one step instead of byte by byte.
_RUNS: Final = {
    _START: re.compile(rb"[ \t\r\n]+"),
    _RECOVERY: re.compile(rb"[\t\x20-\x2b\x2d-\x39\x3b-\x5a\x5c\x5e-\x7a\x7c\x7e-\xfd]+"),
    _DQ: re.compile(rb"[\x20\x21\x23-\x5b\x5d-\xfd]+"),
    _SQ: re.compile(rb"[\x20-\x26\x28-\x5b\x5d-\xfd]+"),
    _DIGITS: re.compile(rb"[0-9]+"),
    _MANTISSA_DIGITS: re.compile(rb"[0-9]+"),
    _EXP_DIGITS: re.compile(rb"[0-9]+"),
    _KEYWORD: re.compile(rb"[a-z]+"),
}

Token = tuple[int, bytes]


class _Lexer:
    """``json-lexer.c``: bytes in, ``(token type, token text)`` out through ``emit``."""

    def __init__(self, emit: Callable[[int, bytes], None]) -> None:
        self._emit = emit
        self._state = _START
        self._token = bytearray()

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            run = _RUNS.get(self._state)
            match = run.match(data, i) if run is not None else None
            if match is None:
                self._feed_byte(data[i], flush=False)
                i += 1
                continue
            end = match.end()
            if self._state not in (_START, _RECOVERY):
                end = min(end, i + MAX_TOKEN_SIZE + 1 - len(self._token))
                self._token += data[i:end]
            i = end
            self._check_size()

    def flush(self) -> None:
        """End of input: finish or reject the token in progress, then ``END_OF_INPUT``."""
        self._feed_byte(0, flush=True)
        self._emit(END_OF_INPUT, b"")

    def _feed_byte(self, byte: int, *, flush: bool) -> None:
        consumed = False
        while (self._state != _START) if flush else not consumed:
            code = _TABLE[self._state][byte]
            consumed = not flush and not code & _LOOKAHEAD
            code &= ~_LOOKAHEAD
            if consumed:
                self._token.append(byte)
            if code >= LCURLY:
                self._emit(code, bytes(self._token))
                self._token.clear()
                code = _START
            elif code == _START:
                self._token.clear()
            elif code == ERROR:
                self._emit(ERROR, bytes(self._token))
                self._token.clear()
                code = _RECOVERY
            elif code == _RECOVERY:
                self._token.clear()
            self._state = code
        self._check_size()

    def _check_size(self) -> None:
        # A single token may not grow without bound; QEMU hands it on as is and starts over.
        if len(self._token) > MAX_TOKEN_SIZE:
            self._emit(OVERSIZED, bytes(self._token))
            self._token.clear()
            self._state = _START


# ---------------------------------------------------------------------------------------------
# Streamer (json-streamer.c): cuts the token stream into messages and enforces the limits.
# ---------------------------------------------------------------------------------------------

#: What the streamer hands on: a parsed value, or the error QEMU replies with instead.
Message = tuple[Any, JSONParseError | None]


class MessageStreamer:
    """Feed bytes as they arrive; complete messages come out of :meth:`feed` in order.

    Each message is ``(value, None)`` or ``(None, error)``: QEMU answers an error with a
    ``GenericError`` reply and carries on with the next byte, so errors are data here.
    """

    def __init__(self) -> None:
        self._lexer = _Lexer(self._process_token)
        self._tokens: list[Token] = []
        self._braces = 0
        self._brackets = 0
        self._size = 0
        self._out: list[Message] = []

    def feed(self, data: bytes) -> list[Message]:
        """Consume ``data``; return every message it completed."""
        self._lexer.feed(data)
        out, self._out = self._out, []
        return out

    def flush(self) -> list[Message]:
        """Declare end of input (used for command-line JSON, never by QEMU's monitor)."""
        self._lexer.flush()
        out, self._out = self._out, []
        return out

    def _process_token(self, kind: int, text: bytes) -> None:
        if kind == LCURLY:
            self._braces += 1
        elif kind == RCURLY:
            self._braces -= 1
        elif kind == LSQUARE:
            self._brackets += 1
        elif kind == RSQUARE:
            self._brackets -= 1
        elif kind == ERROR:
            # error_setg("... stray '%s'"): the C string ends at a NUL byte.
            stray = decode_lossy(text.split(b"\0", 1)[0])
            return self._finish(None, JSONParseError(f"JSON parse error, stray '{stray}'"))
        elif kind == END_OF_INPUT:
            if not self._tokens:
                return None
            return self._finish(*_parse_tokens(self._tokens))

        if self._size + len(text) + 1 > MAX_TOKEN_SIZE:
            return self._finish(None, JSONParseError("JSON token size limit exceeded"))
        if len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            return self._finish(None, JSONParseError("JSON token count limit exceeded"))
        if self._brackets + self._braces > MAX_NESTING:
            return self._finish(None, JSONParseError("JSON nesting depth limit exceeded"))
        self._tokens.append((kind, text))
        self._size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return None
        return self._finish(*_parse_tokens(self._tokens))

    def _finish(self, value: Any, error: JSONParseError | None) -> None:
        self._braces = self._brackets = self._size = 0
        self._tokens = []
        self._out.append((value, error))


def from_json(text: str | bytes) -> Any:
    """``qobject_from_json()``: exactly one JSON value, or :class:`JSONParseError`."""
    data = text.encode() if isinstance(text, str) else text
    streamer = MessageStreamer()
    messages = streamer.feed(data) + streamer.flush()
    result: Any = None
    found = False
    for value, error in messages:
        if error is not None:
            raise error
        if found:
            raise JSONParseError("Expecting at most one JSON value")
        result, found = value, True
    if not found:
        raise JSONParseError("Expecting a JSON value")
    return result


# ---------------------------------------------------------------------------------------------
# Parser (json-parser.c)
# ---------------------------------------------------------------------------------------------


class _Fail(Exception):
    """Internal: unwinds the recursive descent once the first error is recorded."""


@contextmanager
def _deep_recursion() -> Iterator[None]:
    # MAX_NESTING levels need two Python frames each (value + container).
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 4 * MAX_NESTING + 200))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def fail(self, message: str) -> _Fail:
        encoded = message.encode("utf-8", "surrogateescape")[: _PARSE_ERROR_BUFFER - 1]
        self.error = JSONParseError("JSON parse error, " + decode_lossy(encoded))
        return _Fail()

    def peek(self) -> Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def pop(self) -> Token | None:
        token = self.peek()
        self._pos += token is not None
        return token

    def value(self) -> Any:
        token = self.peek()
        if token is None:
            raise self.fail("premature EOI")
        kind = token[0]
        if kind == LCURLY:
            return self.object()
        if kind == LSQUARE:
            return self.array()
        if kind in (INTEGER, FLOAT, STRING):
            return self.literal()
        if kind == KEYWORD:
            return self.keyword()
        raise self.fail("expecting value")

    def object(self) -> dict[str, Any]:
        self.pop()
        result: dict[str, Any] = {}
        peek = self.peek()
        if peek is None:
            raise self.fail("premature EOI")
        if peek[0] == RCURLY:
            self.pop()
            return result
        while True:
            self.pair(result)
            token = self.pop()
            if token is None:
                raise self.fail("premature EOI")
            if token[0] == RCURLY:
                return result
            if token[0] != COMMA:
                raise self.fail("expected separator in dict")

    def pair(self, into: dict[str, Any]) -> None:
        if self.peek() is None:
            raise self.fail("premature EOI")
        key = self.value()
        if not isinstance(key, str):
            raise self.fail("key is not a string in object")
        token = self.pop()
        if token is None:
            raise self.fail("premature EOI")
        if token[0] != COLON:
            raise self.fail("missing : in object pair")
        value = self.value()
        if key in into:
            raise self.fail("duplicate key")
        into[key] = value

    def array(self) -> list[Any]:
        self.pop()
        result: list[Any] = []
        peek = self.peek()
        if peek is None:
            raise self.fail("premature EOI")
        if peek[0] == RSQUARE:
            self.pop()
            return result
        while True:
            result.append(self.value())
            token = self.pop()
            if token is None:
                raise self.fail("premature EOI")
            if token[0] == RSQUARE:
                return result
            if token[0] != COMMA:
                raise self.fail("expected separator in list")

    def keyword(self) -> Any:
        _, text = self.pop() or (0, b"")
        words: dict[bytes, Any] = {b"true": True, b"false": False, b"null": None}
        if text in words:
            return words[text]
        raise self.fail(f"invalid keyword '{text.decode('ascii')}'")

    def literal(self) -> Any:
        kind, text = self.pop() or (0, b"")
        if kind == STRING:
            return self.string(text)
        if kind == INTEGER:
            # int64 if it fits, else uint64 (non-negative only), else a double.
            number = int(text)
            if -(1 << 63) <= number < (1 << 63) or (text[:1] != b"-" and number < (1 << 64)):
                return number
        return float(text)

    def string(self, token: bytes) -> str:
        body = token[1:-1]
        parts: list[str] = []
        i = 0
        while i < len(body):
            backslash = body.find(b"\\", i)
            chunk = body[i:] if backslash < 0 else body[i:backslash]
            if chunk:
                parts.append(self.utf8(chunk))
            if backslash < 0:
                break
            i = self.escape(body, backslash, parts)
        return "".join(parts)

    def escape(self, body: bytes, start: int, parts: list[str]) -> int:
        simple = {
            ord('"'): '"',
            ord("'"): "'",
            ord("\\"): "\\",
            ord("/"): "/",
            ord("b"): "\b",
            ord("f"): "\f",
            ord("n"): "\n",
            ord("r"): "\r",
            ord("t"): "\t",
        }
        char = body[start + 1]
        if char in simple:
            parts.append(simple[char])
            return start + 2
        if char != ord("u"):
            raise self.fail("invalid escape sequence in string")
        pos = start + 2
        code = _hex4(body, pos)
        pos += 4
        if 0xD800 <= code <= 0xDBFF and body[pos : pos + 2] == b"\\u":
            trailing = _hex4(body, pos + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                code = 0x10000 + ((code & 0x3FF) << 10) | (trailing & 0x3FF)
                pos += 6
            else:
                code = -1
        if not _valid_codepoint(code):
            # "%.*s": the escape text, cut at the token's terminating NUL.
            text = (body + b"\0")[start : min(pos, len(body) + 1)].split(b"\0", 1)[0]
            raise self.fail(f"{decode_lossy(text)} is not a valid Unicode character")
        parts.append(chr(code))
        return pos

    def utf8(self, chunk: bytes) -> str:
        try:
            text = chunk.replace(b"\xc0\x80", b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8 sequence in string") from None
        if _NONCHARACTER.search(text):
            raise self.fail("invalid UTF-8 sequence in string")
        return text


_NONCHARACTER: Final = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)


def _hex4(data: bytes, pos: int) -> int:
    digits = data[pos : pos + 4]
    if len(digits) != 4 or not all(c in b"0123456789abcdefABCDEF" for c in digits):
        return -1
    return int(digits, 16)


def _valid_codepoint(code: int) -> bool:
    """``util/unicode.c``: what ``mod_utf8_encode()`` accepts."""
    if code < 0 or code > 0x10FFFF:
        return False
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= code <= 0xDFFF


def _parse_tokens(tokens: list[Token]) -> Message:
    parser = _Parser(tokens)
    try:
        with _deep_recursion():
            return parser.value(), None
    except _Fail:
        return None, parser.error


# ---------------------------------------------------------------------------------------------
# Writer (json-writer.c) and QDict order (qdict.c)
# ---------------------------------------------------------------------------------------------


def tdb_hash(key: str) -> int:
    """``qdict.c``'s ``tdb_hash()`` over the key's modified UTF-8 bytes."""
    data = key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_items(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """The members in the order QEMU iterates a ``QDict`` built by inserting them in order.

    Buckets ascend; within a bucket the newest entry comes first (``QLIST_INSERT_HEAD``).
    """
    indexed = [(tdb_hash(k) % QDICT_BUCKET_MAX, -n, k, v) for n, (k, v) in enumerate(obj.items())]
    indexed.sort(key=lambda entry: (entry[0], entry[1]))
    return [(k, v) for _, _, k, v in indexed]


def decode_lossy(data: bytes) -> str:
    """Decode QEMU's modified UTF-8 as its writer does: each bad sequence becomes U+FFFD."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        code, i = _mod_utf8_codepoint(data, i)
        out.append("\ufffd" if code < 0 else chr(code))
    return "".join(out)


def _mod_utf8_codepoint(data: bytes, i: int) -> tuple[int, int]:
    """``mod_utf8_codepoint()``: the code point at ``data[i]`` (or -1) and where the next starts."""
    byte = data[i]
    i += 1
    if byte < 0x80:
        return byte, i
    if byte >= 0xFE or not byte & 0x40:
        return -1, i
    length, mask = 0, 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    code = byte & (mask - 1)
    for _ in range(1, length):
        if i >= len(data) or data[i] & 0xC0 != 0x80:
            return -1, i
        code = code << 6 | data[i] & 0x3F
        i += 1
    overlong = code < (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
    if not _valid_codepoint(code) or (overlong and not (code == 0 and length == 2)):
        return -1, i
    return code, i


def _quote(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        else:
            if not _valid_codepoint(code):
                code = 0xFFFD
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04X}")
    out.append('"')
    return "".join(out)


_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _write(value: Any, pretty: bool, depth: int, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append("%.17g" % value)  # noqa: UP031  # C's %.17g, which f-strings spell differently
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, dict | list | tuple):
        is_dict = isinstance(value, dict)
        items: list[tuple[str, Any]] = (
            qdict_items(value) if is_dict else [("", v) for v in value]  # type: ignore[arg-type]
        )
        inner = "\n" + "    " * (depth + 1)
        out.append("{" if is_dict else "[")
        for n, (key, member) in enumerate(items):
            if n:
                out.append("," + inner if pretty else ", ")
            elif pretty:
                out.append(inner)
            if is_dict:
                out.append(_quote(key) + ": ")
            _write(member, pretty, depth + 1, out)
        if pretty:
            out.append("\n" + "    " * depth)
        out.append("}" if is_dict else "]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as QMP JSON")


def to_json(value: Any, *, pretty: bool = False) -> str:
    """``qobject_to_json_pretty()``: QEMU's exact text for ``value`` (objects in QDict order)."""
    out: list[str] = []
    with _deep_recursion():
        _write(value, pretty, 0, out)
    return "".join(out)
