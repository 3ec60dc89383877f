"""``qmp-reference``: the reference endpoint behind QEMU's command line.

    qmp-reference -M none -nodefaults -display none -qmp unix:qmp.sock,server=on,wait=off

accepts what a test harness passes to ``qemu-system-x86_64`` and behaves the same way:

- monitors: ``-qmp unix:PATH,server=on[,wait=off]`` (old spellings ``server``, ``nowait``),
  ``-qmp tcp:HOST:PORT,server=on,...``, ``-qmp stdio``, ``-qmp-pretty``, and
  ``-chardev socket,id=ID,path=PATH|host=H,port=P,server=on,...`` / ``-chardev stdio,id=ID``
  with ``-mon chardev=ID,mode=control[,pretty=on]``; several monitors may coexist;
- block devices: ``-blockdev`` as JSON or as QEMU's dotted key=value syntax, ``-drive``;
- accepted without effect: ``-M none``/``-machine none``, ``-nodefaults``, ``-display none``,
  ``-S``, ``-accel ...``, ``-name ...``, ``-L``, ``-m``, ``-no-shutdown``, ``-nographic``;
- ours: ``--emulate 7.2|10.0`` (default 10.0) picks the emulated QEMU version.

Errors are printed as QEMU prints them (``PROG: -option value: message``) with exit status 1.
Block devices are created before monitors open, as in QEMU.  The server runs until ``quit``,
SIGTERM or SIGINT (then ``SHUTDOWN`` with reason ``host-signal``, as QEMU).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from reference.server import ConfigError, Listener, QMPServer
from reference.server.qjson import JSONParseError, from_json
from reference.server.server import program_name

__all__ = ["Options", "keyval_parse", "main", "parse_args"]

DEFAULT_VERSION: Final = "10.0"
VERSIONS: Final = ("7.2", "10.0")
#: Copyright years QEMU prints with ``-version``, per emulated version.
_COPYRIGHT: Final = {"7.2": "2003-2022", "10.0": "2003-2025"}

_FLAGS: Final = frozenset(
    {"-nodefaults", "-S", "-no-shutdown", "-nographic", "-qmp-pretty", "-version", "-h", "-help"}
)
_WITH_ARGUMENT: Final = frozenset(
    {
        "-M", "-machine", "-display", "-accel", "-name", "-qmp", "-chardev", "-mon",
        "-blockdev", "-drive", "-L", "-m", "-emulate", "-serial", "-monitor", "-parallel",
    }
)  # fmt: skip
_NONE_ONLY: Final = frozenset({"-serial", "-monitor", "-parallel"})


@dataclass
class Options:
    """The parsed command line, in the order QEMU acts on it."""

    version: str = DEFAULT_VERSION
    listeners: list[Listener] = field(default_factory=list)
    #: ``("-blockdev" | "-drive", original text, parsed options)`` in command-line order.
    devices: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    show_version: bool = False
    show_help: bool = False
    #: ``-M``/``-machine`` type; only ``none`` exists here.
    machine: str = "none"


# ---- key=value syntaxes -------------------------------------------------------------------------

_QAPI_NAME: Final = re.compile(r"(?:__[A-Za-z0-9.-]+_)?[A-Za-z][A-Za-z0-9_-]*")
_MAX_FRAGMENT: Final = 127


def keyval_parse(text: str, implied_key: str | None = None) -> dict[str, Any]:
    """``util/keyval.c``: ``a.b=1,c=x,,y`` → ``{"a": {"b": "1"}, "c": "x,y"}``.

    Values stay strings; numeric fragments make lists (``a.0=x`` → ``{"a": ["x"]}``); the last
    of repeated keys wins.  Raises :class:`ConfigError` with QEMU's message.
    """
    root: dict[str, Any] = {}
    pos, first = 0, True
    while pos < len(text):
        length = len(re.split(r"[=,]", text[pos:], maxsplit=1)[0])
        key_start, key_end = pos, pos + length
        key = text[key_start:key_end]
        if first and implied_key and length and text[key_end : key_end + 1] != "=":
            value_end = key_end
            _keyval_put(root, [implied_key], text[pos:value_end], implied_key)
            pos = value_end + 1 if text[value_end : value_end + 1] == "," else value_end
            first = False
            continue
        first = False
        fragments = _key_fragments(key)
        if text[key_end : key_end + 1] != "=":
            raise ConfigError(f"Expected '=' after parameter '{key}'")
        pos = key_end + 1
        value: list[str] = []
        while pos < len(text):
            if text[pos] == ",":
                if text[pos + 1 : pos + 2] != ",":
                    pos += 1
                    break
                pos += 1
            value.append(text[pos])
            pos += 1
        _keyval_put(root, fragments, "".join(value), key)
    result = _listify(root, "")
    if not isinstance(result, dict):
        raise ConfigError("Parameters '*' used inconsistently")
    return result


def _key_fragments(key: str) -> list[str]:
    fragments: list[str] = []
    pos = 0
    while True:
        digits = re.match(r"[0-9]+", key[pos:]) if fragments else None
        match = digits or _QAPI_NAME.match(key, pos)
        length = match.end() - match.start() if match else 0
        if not length or (pos + length < len(key) and key[pos + length] != "."):
            raise ConfigError(f"Invalid parameter '{key}'")
        if length > _MAX_FRAGMENT:
            kind = " fragment" if fragments or pos + length != len(key) else ""
            raise ConfigError(f"Parameter{kind} '{key[pos : pos + length]}' is too long")
        fragments.append(key[pos : pos + length])
        pos += length
        if pos >= len(key):
            return fragments
        pos += 1


def _keyval_put(root: dict[str, Any], fragments: list[str], value: str, key: str) -> None:
    node = root
    for depth, fragment in enumerate(fragments[:-1]):
        child = node.setdefault(fragment, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"Parameters '{'.'.join(fragments[: depth + 1])}.*' used inconsistently"
            )
        node = child
    if isinstance(node.get(fragments[-1]), dict):
        raise ConfigError(f"Parameters '{key}.*' used inconsistently")
    node[fragments[-1]] = value


def _listify(node: dict[str, Any], prefix: str) -> Any:
    for key, value in list(node.items()):
        if isinstance(value, dict):
            node[key] = _listify(value, f"{prefix}{key}.")
    indexes = [k for k in node if k.isdigit()]
    if not indexes:
        return node
    if len(indexes) != len(node):
        raise ConfigError(f"Parameters '{prefix}*' used inconsistently")
    for i in range(len(node)):
        if str(i) not in node:
            raise ConfigError(f"Parameter '{prefix}{i}' missing")
    return [node[str(i)] for i in range(len(node))]


def qemu_opts_parse(text: str) -> dict[str, str]:
    """QemuOpts (``-drive``): flat ``key=value``; ``,,`` escapes; ``flag``/``noflag`` → on/off."""
    options: dict[str, str] = {}
    for escaped in re.split(r"(?<!,),(?!,)", text.replace(",,", "\0")):
        item = escaped.replace("\0", ",")
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            key, value = (key[2:], "off") if key.startswith("no") else (key, "on")
        options[key] = value
    return options


def _on_off(value: str, name: str) -> bool:
    """``qapi_bool_parse()``."""
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise ConfigError(f"Parameter '{name}' expects 'on' or 'off'")


# ---- monitors -----------------------------------------------------------------------------------


def _socket_listener(opts: dict[str, str], origin: str, pretty: bool) -> Listener:
    if not _on_off(opts.get("server", "off"), "server"):
        raise ConfigError("client mode sockets are not supported by the reference (use server=on)")
    wait = _on_off(opts.get("wait", "on"), "wait")
    if "path" in opts:
        return Listener("unix", path=opts["path"], wait=wait, pretty=pretty, origin=origin)
    if "port" not in opts:
        raise ConfigError("chardev: socket: no host given")
    host = opts.get("host", "")
    return Listener(
        "tcp", host=host, port=int(opts["port"]), wait=wait, pretty=pretty, origin=origin
    )


def parse_qmp(spec: str, pretty: bool) -> Listener:
    """A ``-qmp`` chardev spec: ``unix:PATH[,server=on][,wait=off]``, ``tcp:H:P,...``, ``stdio``."""
    origin = f"-qmp {spec}"
    head, _, rest = spec.partition(",")
    opts = qemu_opts_parse(rest)
    if head == "stdio":
        return Listener("stdio", pretty=pretty, origin=origin)
    if head.startswith("unix:"):
        opts["path"] = head[5:]
    elif head.startswith("tcp:"):
        opts["host"], _, opts["port"] = head[4:].rpartition(":")
    else:
        raise ConfigError(f"'{head}' is not a supported chardev backend of the reference")
    return _socket_listener(opts, origin, pretty)


def parse_chardev(spec: str) -> tuple[str, dict[str, str]]:
    """``-chardev BACKEND,id=ID,...``: the id and the options (backend under ``backend``)."""
    backend, _, rest = spec.partition(",")
    opts = qemu_opts_parse(rest)
    if "id" not in opts:
        raise ConfigError("Parameter 'id' is missing")
    if backend not in ("socket", "stdio"):
        raise ConfigError(f"'{backend}' is not a supported chardev backend of the reference")
    opts["backend"] = backend
    return opts["id"], opts


# ---- the command line ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> Options:
    """QEMU's option syntax: ``-opt [value]``, ``--opt`` the same; raises :class:`ConfigError`."""
    options = Options()
    chardevs: dict[str, dict[str, str]] = {}
    global_pretty = False
    qmp_specs: list[tuple[str, str]] = []  # ("-qmp"|"-mon", value), kept in order
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = "-" + arg.lstrip("-") if arg.startswith("-") else arg
        if name not in _FLAGS and name not in _WITH_ARGUMENT:
            raise ConfigError(f"{arg}: invalid option")
        if name in _FLAGS:
            i += 1
            options.show_version |= name == "-version"
            options.show_help |= name in ("-h", "-help")
            global_pretty |= name == "-qmp-pretty"
            continue
        if i + 1 >= len(argv):
            raise ConfigError(f"{arg}: requires an argument")
        value = argv[i + 1]
        i += 2
        where = f"{arg} {value}"
        try:
            _apply(name, value, options, chardevs, qmp_specs)
        except JSONParseError as exc:
            raise ConfigError(f"{where}: {exc.desc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if options.machine != "none":
        # QEMU 7.2 does not name the type; 10.0 quotes it.
        named = f': "{options.machine}"' if options.version != "7.2" else ""
        raise ConfigError(
            f"unsupported machine type{named}\nUse -machine help to list supported machines"
        )
    for name, value in qmp_specs:
        try:
            options.listeners.append(_monitor(name, value, chardevs, global_pretty))
        except ConfigError as exc:
            raise ConfigError(f"{name} {value}: {exc}") from None
    return options


def _apply(
    name: str,
    value: str,
    options: Options,
    chardevs: dict[str, dict[str, str]],
    qmp_specs: list[tuple[str, str]],
) -> None:
    """Act on one option that takes an argument."""
    if name == "-emulate":
        if value not in VERSIONS:
            raise ConfigError(f"unsupported version, choose one of {', '.join(VERSIONS)}")
        options.version = value
    elif name in ("-M", "-machine"):
        options.machine = str(keyval_parse(value, "type").get("type", "none"))
    elif name in _NONE_ONLY and value != "none":
        raise ConfigError("only 'none' is supported by the reference")
    elif name == "-chardev":
        chardev_id, opts = parse_chardev(value)
        chardevs[chardev_id] = opts
    elif name in ("-qmp", "-mon"):
        qmp_specs.append((name, value))
    elif name == "-blockdev":
        parsed = from_json(value) if value.startswith("{") else keyval_parse(value, "driver")
        options.devices.append(("-blockdev", value, parsed))
    elif name == "-drive":
        options.devices.append(("-drive", value, qemu_opts_parse(value)))


def _monitor(name: str, value: str, chardevs: dict[str, dict[str, str]], pretty: bool) -> Listener:
    if name == "-qmp":
        return parse_qmp(value, pretty)
    opts = qemu_opts_parse(value)
    chardev_id = opts.get("chardev", "")
    if chardev_id not in chardevs:
        raise ConfigError(f'chardev "{chardev_id}" not found')
    if opts.get("mode", "readline") != "control":
        raise ConfigError("only mode=control (QMP) monitors are supported by the reference")
    pretty = _on_off(opts.get("pretty", "off"), "pretty")
    chardev = chardevs[chardev_id]
    origin = f"-chardev {chardev_id}"
    if chardev["backend"] == "stdio":
        return Listener("stdio", pretty=pretty, origin=origin)
    return _socket_listener(chardev, origin, pretty)


# ---- -blockdev typing (the keyval input visitor) ------------------------------------------------


def keyval_typed(value: Any, version: str) -> Any:
    """Convert ``-blockdev`` keyval strings as QEMU's keyval visitor does for BlockdevOptions."""
    try:
        from reference.qapi import load_schema  # noqa: PLC0415  # the engine's schema, if present

        blockdev = load_schema(version=version).lookup_type("BlockdevOptions")
    except (ImportError, KeyError):
        return value
    return _convert(blockdev, value, "")


def _convert(typ: Any, value: Any, name: str) -> Any:
    kind = type(typ).__name__
    if kind == "Builtin" and isinstance(value, str):
        return _scalar(typ.name, value, name)
    if kind == "ArrayType" and isinstance(value, list):
        return [_convert(typ.element, v, f"{name}.{i}") for i, v in enumerate(value)]
    if kind == "ObjectType" and isinstance(value, dict):
        members = {m.name: m.type for m in typ.all_members()}
        tag = typ.tag
        if tag is not None and isinstance(value.get(tag), str):
            variant = typ.variant(value[tag])
            if variant is not None:
                members.update({m.name: m.type for m in variant.type.all_members()})
        prefix = f"{name}." if name else ""
        return {
            key: _convert(members[key], member, prefix + key) if key in members else member
            for key, member in value.items()
        }
    if kind == "AlternateType":
        wanted = "object" if isinstance(value, dict) else "string"
        wanted = "array" if isinstance(value, list) else wanted
        branch = typ.branch_for(wanted)
        if branch is None and wanted == "string":
            for alt in typ.alternatives:  # keyval has only strings: try the scalar branches
                try:
                    return _convert(alt.type, value, name)
                except ConfigError:
                    continue
        return value if branch is None else _convert(branch.type, value, name)
    return value


def _scalar(builtin: str, value: str, name: str) -> Any:
    if builtin == "bool":
        return _on_off(value, name)
    if builtin == "number":
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"Parameter '{name}' expects number") from None
    if builtin == "size":
        match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmMgGtTpPeE]?)[bB]?", value)
        if not match:
            raise ConfigError(f"Parameter '{name}' expects a non-negative number below 2^64")
        scale = 1 << (10 * " KMGTPE".index(match.group(2).upper() or " "))
        return int(float(match.group(1)) * scale)
    if builtin.startswith(("int", "uint")):
        try:
            return int(value, 0) if value.lower().startswith("0x") else int(value)
        except ValueError:
            raise ConfigError(f"Parameter '{name}' expects integer") from None
    return value


# ---- running ------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    print(f"{program_name()}: {message}", file=sys.stderr)
    raise SystemExit(1)


def _usage() -> str:
    return (
        f"usage: {program_name()} [options]\n\n"
        "QEMU-compatible options understood by the reference endpoint:\n"
        "  -qmp unix:PATH,server=on[,wait=off] | tcp:HOST:PORT,server=on[,...] | stdio\n"
        "  -qmp-pretty\n"
        "  -chardev socket,id=ID,path=PATH|host=HOST,port=PORT,server=on[,wait=off]\n"
        "  -chardev stdio,id=ID\n"
        "  -mon chardev=ID,mode=control[,pretty=on]\n"
        "  -blockdev JSON|key=value,...   -drive key=value,...\n"
        "  -M none  -nodefaults  -display none  -S  -accel ACCEL  -name NAME\n"
        "  -version  -h\n"
        "Reference options:\n"
        "  --emulate 7.2|10.0   emulated QEMU version (default 10.0)\n"
    )


def _machine_errors() -> tuple[type[BaseException], ...]:
    try:
        from reference.errors import QMPError  # noqa: PLC0415  # owned by the engine
    except ImportError:
        return (ValueError,)
    return (ValueError, QMPError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qmp-reference``; returns the exit status."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        _fail(str(exc))
    if options.show_help:
        print(_usage(), end="")
        return 0
    from reference.machine import Machine  # noqa: PLC0415  # heavy: only when serving

    machine = Machine(options.version)
    if options.show_version:
        qemu = machine.greeting()["QMP"]["version"]["qemu"]
        print(
            f"QEMU emulator version {qemu['major']}.{qemu['minor']}.{qemu['micro']} (qmp-reference)"
        )
        print(
            f"Copyright (c) {_COPYRIGHT.get(options.version, '2003-2025')} "
            "Fabrice Bellard and the QEMU Project developers"
        )
        return 0
    # QEMU opens every -blockdev before any -drive (configure_blockdev).
    devices = sorted(options.devices, key=lambda device: device[0] != "-blockdev")
    for option, text, parsed in devices:
        try:
            if option == "-blockdev":
                typed = parsed if text.startswith("{") else keyval_typed(parsed, options.version)
                machine.add_blockdev(typed)
            else:
                machine.add_drive(parsed)
        except ConfigError as exc:
            _fail(f"{option} {text}: {exc}")
        except _machine_errors() as exc:
            _fail(f"{option} {text}: {getattr(exc, 'desc', exc)}")
    return asyncio.run(_serve(machine, options.listeners))


async def _serve(machine: Any, listeners: list[Listener]) -> int:
    server = QMPServer(machine, listeners)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):

        def on_signal(signum: int = signum) -> None:
            print(f"{program_name()}: terminating on signal {signum}", file=sys.stderr, flush=True)
            server.stop("host-signal")

        loop.add_signal_handler(signum, on_signal)
    try:
        await server.run()
    except OSError as exc:
        _fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
