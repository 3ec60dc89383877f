"""QMP framing and request validation, as QEMU's monitor does it (``monitor/qmp.c``,
``qapi/qmp-dispatch.c``).

This module turns bytes into :class:`Request` objects or ready error replies, and replies into
bytes.  It knows nothing of connections or of the machine; :mod:`.session` decides what to run.

Spec: ``docs/interop/qmp-spec.rst`` (sections "Issuing Commands", "Commands Responses",
"Out-of-band execution").  Where QEMU's behaviour is more specific than the spec, QEMU wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .qjson import JSONParseError, MessageStreamer, qdict_items, to_json

__all__ = [
    "ABSENT",
    "Decoder",
    "Request",
    "encode",
    "error_reply",
    "parse_request",
]

#: ``qapi/error.json``: the error classes the server itself produces.
GENERIC_ERROR: Final = "GenericError"
COMMAND_NOT_FOUND: Final = "CommandNotFound"


class _Absent:
    """Marker for "no ``id`` member" (``"id": null`` is a real id and is echoed)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


@dataclass(frozen=True)
class Request:
    """A syntactically valid QMP command (qmp-spec "Issuing Commands")."""

    command: str
    arguments: dict[str, Any]
    id: Any  # any JSON value, or ABSENT
    oob: bool  # sent as "exec-oob"


def error_reply(cls: str, desc: str, id: Any = ABSENT) -> dict[str, Any]:
    """``qmp_error_response()`` plus the id QEMU adds when the request had one."""
    reply: dict[str, Any] = {"error": {"class": cls, "desc": desc}}
    if id is not ABSENT:
        reply["id"] = id
    return reply


def parse_request(value: Any, *, allow_oob: bool) -> Request | dict[str, Any]:
    """``qmp_dispatch_check_obj()``: a :class:`Request`, or the error reply QEMU sends instead.

    Members are checked in QDict order, so with several bad members QEMU names the one in the
    lowest hash bucket, e.g. ``{"execute": "x", "foo": 1, "bar": 2}`` blames ``'bar'``.
    """
    if not isinstance(value, dict):
        return error_reply(GENERIC_ERROR, "QMP input must be a JSON object")
    id = value.get("id", ABSENT)
    exec_key: str | None = None
    for name, member in qdict_items(value):
        if name == "execute" or (name == "exec-oob" and allow_oob):
            if not isinstance(member, str):
                return error_reply(GENERIC_ERROR, f"QMP input member '{name}' must be a string", id)
            if exec_key is not None:
                desc = f"QMP input member '{name}' clashes with '{exec_key}'"
                return error_reply(GENERIC_ERROR, desc, id)
            exec_key = name
        elif name == "arguments":
            if not isinstance(member, dict):
                desc = "QMP input member 'arguments' must be an object"
                return error_reply(GENERIC_ERROR, desc, id)
        elif name != "id":
            return error_reply(GENERIC_ERROR, f"QMP input member '{name}' is unexpected", id)
    if exec_key is None:
        return error_reply(GENERIC_ERROR, "QMP input lacks member 'execute'", id)
    return Request(
        command=value[exec_key],
        arguments=value.get("arguments", {}),
        id=id,
        oob=exec_key == "exec-oob",
    )


class Decoder:
    """Bytes from one connection in, JSON values or parse-error replies out, in order."""

    def __init__(self) -> None:
        self._streamer = MessageStreamer()

    def feed(self, data: bytes) -> list[Any | JSONParseError]:
        """Each completed message: the parsed value, or the :class:`JSONParseError`."""
        return [value if error is None else error for value, error in self._streamer.feed(data)]


def encode(message: dict[str, Any], *, pretty: bool = False) -> bytes:
    """One message on the wire: QEMU's JSON, a newline, and every ``\\n`` sent as ``\\r\\n``.

    (``monitor_puts()`` turns each newline into CRLF, including those of pretty output.)
    """
    return (to_json(message, pretty=pretty) + "\n").replace("\n", "\r\n").encode("ascii")
