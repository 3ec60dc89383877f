"""qemu-io's command language, as ``human-monitor-command`` runs it: parsing and messages.

What tests send through ``qemu-io NODE "..."`` is parsed here the way qemu-io parses it
(confirmed on QEMU 7.2 and 10.0): words split on spaces, no quoting; GNU ``getopt`` option
parsing, which also takes options after the operands; ``qemu_strtosz`` numbers (decimal, ``0x``
hex without suffix, a fraction only with a suffix, suffixes B K M G T P E, 1024-based); pattern
bytes as ``strtol`` base 0 reads them. Every refusal prints qemu-io's own message and does nothing,
so bad input never reaches the block layer. Options that would need a part of QEMU the reference
does not model (``-b`` vmstate, ``-c`` compressed writes, ``-s`` a source file, ``-n``) are refused
with a QMP error naming the option, never run as something else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from reference.errors import QMPError

#: ``BDRV_REQUEST_MAX_BYTES``: the longest request qemu-io issues.
REQUEST_MAX_BYTES = 2147483136
_U64_MAX = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
_SUFFIXES = {c: 1 << (10 * i) for i, c in enumerate("bkmgtpe")}


class _SizeError(Exception):
    """``qemu_strtosz`` refused a number: ``too_large`` (-ERANGE) or not (-EINVAL)."""

    def __init__(self, too_large: bool) -> None:
        super().__init__(too_large)
        self.too_large = too_large


def strtosz(text: str, *, hex_suffix: bool = False, warnings: list[str] | None = None) -> int:
    """qemu-io's ``cvtnum``: ``qemu_strtosz`` with the result capped at INT64_MAX.

    ``hex_suffix``: a hex number may take a multiplier suffix (QEMU 7.2), with a deprecation
    warning appended to ``warnings``.
    """
    m = re.match(r"\s*[+-]?\d+", text)
    if m is None or "-" in m.group():
        raise _SizeError(too_large=False)
    value, rest = int(m.group()), text[m.end() :]
    if value > _U64_MAX:
        raise _SizeError(too_large=True)
    fraction: float | None = None
    if value == 0 and rest[:1] in ("x", "X"):
        hexa = re.match(r"[xX]([0-9a-fA-F]+)", rest)
        if hexa is None:
            raise _SizeError(too_large=False)
        value, rest = int(hexa.group(1), 16), rest[hexa.end() :]
        if value > _U64_MAX:
            raise _SizeError(too_large=True)
        if rest[:1] == "." or (rest[:1].lower() in _SUFFIXES and not hex_suffix):
            raise _SizeError(too_large=False)
        if rest[:1].lower() in _SUFFIXES and warnings is not None:
            warnings.append(
                f"warning: Using a multiplier suffix on hex numbers is deprecated: {text}\r\n"
            )
    elif rest[:1] == ".":
        frac = re.match(r"\.\d+", rest)
        if frac is None:
            raise _SizeError(too_large=False)
        fraction, rest = float("0" + frac.group()), rest[frac.end() :]
    multiplier = _SUFFIXES.get(rest[:1].lower(), 0)
    if multiplier:
        rest = rest[1:]
    else:
        multiplier = 1
    if multiplier == 1 and fraction is not None:
        raise _SizeError(too_large=False)
    extra = int((fraction or 0.0) * multiplier)
    if value > (_U64_MAX - extra) // multiplier:
        raise _SizeError(too_large=True)
    if rest:
        raise _SizeError(too_large=False)
    result = value * multiplier + extra
    if result > _I64_MAX:
        raise _SizeError(too_large=True)
    return result


def _cvtnum_error(error: _SizeError, text: str) -> str:
    if error.too_large:
        return f"Parsing error: argument too large -- {text}\n"
    return f"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {text}\n"


def parse_pattern(text: str) -> int | None:
    """``strtol(text, &end, 0)`` taken as one byte; None where qemu-io refuses it."""
    m = re.match(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)?", text)
    assert m is not None
    digits = m.group(2)
    if digits is None:
        return 0 if text == "" else None
    if m.end() != len(text):
        return None
    base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
    value = int(digits, base) * (-1 if m.group(1) == "-" else 1)
    return value if 0 <= value <= 0xFF else None


@dataclass(frozen=True)
class _Command:
    """One qemu-io command: its option string (getopt syntax) and usage line."""

    options: str
    usage: str
    argmin: int
    argmax: int


_COMMANDS = {
    "read": _Command(
        "bCl:pP:qrs:v",
        "read [-abCqrv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at "
        "a specified offset",
        2,
        -1,
    ),
    "write": _Command(
        "bcCfnpP:qrs:uz",
        "write [-bcCfnqruz] [-P pattern | -s source_file] off len -- writes a number of bytes "
        "at a specified offset",
        2,
        -1,
    ),
    "discard": _Command(
        "Cq", "discard [-Cq] off len -- discards a number of bytes at a specified offset", 2, -1
    ),
    "flush": _Command("", "flush -- flush all in-core file state to disk", 0, 0),
}


@dataclass(frozen=True)
class Dialect:
    """How one QEMU version's qemu-io differs."""

    #: A hex number may take a multiplier suffix, with a deprecation warning (7.2).
    hex_suffix: bool = False
    #: ``read``/``write`` take ``-r`` (register the buffer; no effect on data; 8.x+).
    register_flag: bool = True

    def command(self, verb: str) -> _Command | None:
        """The command as this version has it."""
        command = _COMMANDS.get(verb)
        if command is None or self.register_flag:
            return command
        return replace(
            command,
            options=command.options.replace("r", ""),
            usage=command.usage.replace("qr", "q"),
        )


#: Options whose effect the reference does not model: refused, never approximated.
_UNMODELLED = {"b": "vmstate", "c": "compressed writes", "s": "a source file", "n": "no-fallback"}


@dataclass
class Request:
    """A parsed qemu-io command that passed every check qemu-io makes before the I/O."""

    verb: str
    offset: int = 0
    count: int = 0
    #: ``-P``: the byte written, or the byte a read is verified against.
    pattern: int | None = None
    #: ``-z`` (write zeroes), ``-q`` (no report), ``-C`` (statistics line), ``-v`` (hex dump).
    zeroes: bool = False
    #: ``write -z -u``: the zeroes may unmap (``BDRV_REQ_MAY_UNMAP``).
    unmap: bool = False
    quiet: bool = False
    csv: bool = False
    dump: bool = False
    #: ``read -s/-l``: the part of the read data the pattern is checked against.
    pattern_offset: int = 0
    pattern_count: int | None = None


def _getopt(
    verb: str, spec: str, words: list[str]
) -> tuple[list[tuple[str, str]], list[str]] | None:
    """GNU getopt (permuting): ``(options, operands)``, or None for a bad option (getopt's
    own complaint goes to QEMU's stderr; qemu-io then prints the usage line)."""
    takes_arg = {c for i, c in enumerate(spec) if spec[i + 1 : i + 2] == ":"}
    known = set(spec.replace(":", ""))
    options: list[tuple[str, str]] = []
    operands: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            operands += words[i:]
            break
        if not word.startswith("-") or word == "-":
            operands.append(word)
            continue
        j = 1
        while j < len(word):
            c = word[j]
            j += 1
            if c not in known:
                return None
            if c not in takes_arg:
                options.append((c, ""))
                continue
            if j < len(word):
                options.append((c, word[j:]))
            elif i < len(words):
                options.append((c, words[i]))
                i += 1
            else:
                return None
            break
    return options, operands


def parse(line: str, dialect: Dialect, warnings: list[str] | None = None) -> Request | str:
    """A :class:`Request`, or what qemu-io prints on QEMU's stdout instead of doing anything
    (getopt's and the argument counter's complaints go to stderr: not modelled). Warnings that
    QEMU puts in the monitor's reply are appended to ``warnings`` (see :func:`strtosz`)."""

    def number(text: str) -> int:
        return strtosz(text, hex_suffix=dialect.hex_suffix, warnings=warnings)

    words = line.split()
    if not words:
        return ""
    verb, args = words[0], words[1:]
    command = dialect.command(verb)
    if command is None:
        return ""  # 'command "X" not found' goes to QEMU's stderr
    if len(args) < command.argmin or (command.argmax != -1 and len(args) > command.argmax):
        # qemu-io complains about the argument count on QEMU's stderr, not its stdout.
        return ""
    if verb == "flush":
        return Request(verb)
    parsed = _getopt(verb, command.options, args)
    if parsed is None:
        return command.usage + "\n"
    options, operands = parsed
    request = Request(verb)
    flags = {flag for flag, _ in options}
    refusal = _apply_options(request, options, number)
    if refusal:
        return refusal
    if len(operands) != 2:
        return command.usage + "\n"
    if verb == "write":
        refusal = _write_flag_refusal(flags)
        if refusal:
            return refusal
    limit = f"length cannot exceed {REQUEST_MAX_BYTES}"
    try:
        request.offset = number(operands[0])
    except _SizeError as e:
        return _cvtnum_error(e, operands[0])
    try:
        request.count = number(operands[1])
    except _SizeError as e:
        return _cvtnum_error(e, operands[1])
    if request.count > REQUEST_MAX_BYTES:
        suffix = " without -n" if verb == "write" else ""
        return f"{limit}{suffix}, given {operands[1]}\n"
    if verb == "read":
        refusal = _read_pattern_range(request, flags, command.usage)
        if refusal:
            return refusal
    for flag, what in _UNMODELLED.items():
        if flag in flags and not (flag == "s" and verb == "read"):
            raise QMPError(f"qemu-io {verb} -{flag} ({what}) is not implemented by this reference")
    request.zeroes = "z" in flags
    request.unmap = "u" in flags
    request.quiet = "q" in flags
    request.csv = "C" in flags
    request.dump = "v" in flags
    return request


def _apply_options(
    request: Request, options: list[tuple[str, str]], number: Callable[[str], int]
) -> str:
    """Takes the option arguments (``-P``, ``read -s/-l``) in order; the first refusal."""
    for flag, value in options:
        if flag == "P":
            pattern = parse_pattern(value)
            if pattern is None:
                return f"{value} is not a valid pattern byte\n"
            request.pattern = pattern
        elif flag in ("s", "l") and request.verb == "read":
            try:
                size = number(value)
            except _SizeError as e:
                return _cvtnum_error(e, value)
            if flag == "s":
                request.pattern_offset = size
            else:
                request.pattern_count = size
    return ""


def _read_pattern_range(request: Request, flags: set[str], usage: str) -> str:
    """``read``: ``-s/-l`` need ``-P`` and must lie inside the read data."""
    if "P" not in flags and flags & {"s", "l"}:
        return usage + "\n"
    count = request.pattern_count
    if count is None:
        count = request.count - request.pattern_offset
    if count < 0 or count + request.pattern_offset > request.count:
        return "pattern verification range exceeds end of read data\n"
    request.pattern_count = count
    return ""


def _write_flag_refusal(flags: set[str]) -> str:
    """The combinations ``write`` refuses, in qemu-io's order."""
    if "b" in flags and "z" in flags:
        return "-b and -z cannot be specified at the same time\n"
    if "f" in flags and flags & {"b", "c"}:
        return "-f and -b or -c cannot be specified at the same time\n"
    if "u" in flags and "z" not in flags:
        return "-u requires -z to be specified\n"
    if "n" in flags and "z" not in flags:
        return "-n requires -z to be specified\n"
    if len(flags & {"z", "P", "s"}) > 1:
        return "Only one of -z, -P, and -s can be specified at the same time\n"
    return ""
