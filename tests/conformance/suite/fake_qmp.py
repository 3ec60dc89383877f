"""A fake QMP server process whose stream breaks as QEMU 7.2's broke under load (no QEMU
needed): it greets, negotiates, then answers ``query-status`` (and ``block-dirty-bitmap-add``)
with an id-less JSON parse error, or drops the connection at the first command after the
negotiation. Shared by the endpoint tests and the differential harness tests.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from conformance.endpoints import _ProcessEndpoint

PARSE_ERROR = "JSON parse error, missing : in object pair"

FAKE_SERVER = textwrap.dedent(
    """
    import json, socket, sys, time

    mode, path = sys.argv[1], sys.argv[2]
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    stream = conn.makefile("wb")

    def send(message):
        stream.write(json.dumps(message).encode() + b"\\r\\n")
        stream.flush()

    def messages():  # qemu.qmp sends JSON values back to back, without newlines
        decoder, text = json.JSONDecoder(), ""
        while chunk := conn.recv(4096):
            text += chunk.decode()
            while text.strip():
                message, end = decoder.raw_decode(text.lstrip())
                text = text.lstrip()[end:]
                yield message

    version = {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": ""}
    send({"QMP": {"version": version, "capabilities": []}})
    for message in messages():
        if message["execute"] == "qmp_capabilities":
            send({"return": {}} | ({"id": message["id"]} if "id" in message else {}))
        elif mode == "drop":
            stream.close()
            conn.close()
            break
        elif message["execute"] not in ("query-status", "block-dirty-bitmap-add"):
            send({"return": []})  # the recorder's state queries find nothing
        else:
            error = {"class": "GenericError", "desc": DESC}
            if mode == "extra-error":  # a right reply, a moment later an error nobody asked for
                send({"return": []})
                time.sleep(0.3)
            send({"error": error})
    time.sleep(60)
    """
).replace("DESC", repr(PARSE_ERROR))


class FakeQmpProcess(_ProcessEndpoint):
    """The fake server above as a launched endpoint (``mode``: parse-error, extra-error, drop)."""

    def __init__(self, mode: str, workdir: Path | None = None) -> None:
        script = Path(workdir or ".") / "fake_qmp.py"
        script.write_text(FAKE_SERVER)
        super().__init__(
            [sys.executable, str(script), mode], None, workdir, 5.0, lambda path: [str(path)]
        )
