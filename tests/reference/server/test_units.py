"""Unit tests of the server's layers, and a real QMP client library against our server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from qemu.qmp import QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from reference.cli import keyval_parse, parse_args, qemu_opts_parse
from reference.server import ConfigError
from reference.server.events import make_event
from reference.server.qjson import from_json, qdict_items, tdb_hash, to_json
from reference.server.session import Runstate, Session

from .fake_machine import FakeMachine
from .support import ReferenceServer


def test_qdict_order_greeting_matches_qemu_text() -> None:
    greeting = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}}}

    text = to_json(greeting)

    assert text == '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}}}'


def test_tdb_hash_bucket_of_id_after_return() -> None:
    assert tdb_hash("return") % 512 < tdb_hash("id") % 512 < tdb_hash("error") % 512


def test_writer_escapes_non_ascii_as_uppercase_u_escapes() -> None:
    assert to_json("é😀\x00\t") == '"\\u00E9\\uD83D\\uDE00\\u0000\\t"'


def test_writer_doubles_use_percent_17g() -> None:
    assert (
        to_json([0.1, 1e300, -0.0, 100.0])
        == "[0.10000000000000001, 1.0000000000000001e+300, -0, 100]"
    )


def test_from_json_premature_eoi_like_blockdev_json() -> None:
    with pytest.raises(Exception, match="JSON parse error, premature EOI"):
        from_json('{"driver":"qcow2"')


def test_qdict_items_newest_first_within_a_bucket() -> None:
    assert [k for k, _ in qdict_items({"minor": 0, "micro": 2})] == ["micro", "minor"]


def test_keyval_nests_dotted_keys_and_unescapes_commas() -> None:
    parsed = keyval_parse("qcow2,node-name=d,,0,file.driver=file,file.filename=a.qcow2", "driver")

    assert parsed == {
        "driver": "qcow2",
        "node-name": "d,0",
        "file": {"driver": "file", "filename": "a.qcow2"},
    }


def test_keyval_numeric_fragments_make_lists() -> None:
    assert keyval_parse("a.1=y,a.0=x") == {"a": ["x", "y"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "Expected '=' after parameter 'a'"),
        ("1x=2", "Invalid parameter '1x'"),
        ("a.b=1,a=2", "Parameters 'a.*' used inconsistently"),
        ("foo.1=x", "Parameter 'foo.0' missing"),
    ],
)
def test_keyval_errors_use_qemu_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        keyval_parse(text)


def test_qemu_opts_drive_is_flat_strings() -> None:
    parsed = qemu_opts_parse("if=none,id=drv0,file=a,,b.qcow2,format=qcow2,readonly")

    assert parsed == {
        "if": "none",
        "id": "drv0",
        "file": "a,b.qcow2",
        "format": "qcow2",
        "readonly": "on",
    }


def test_parse_args_old_spellings_and_monitors() -> None:
    options = parse_args(
        [
            "-qmp", "unix:/tmp/a.sock,server,nowait",
            "-chardev", "socket,id=c,host=127.0.0.1,port=4444,server=on,wait=off",
            "-mon", "chardev=c,mode=control,pretty=on",
            "--emulate", "7.2", "-S", "-accel", "qtest", "-name", "x",
        ]
    )  # fmt: skip

    first, second = options.listeners
    assert (first.kind, first.path, first.wait) == ("unix", "/tmp/a.sock", False)
    assert (second.kind, second.port, second.pretty) == ("tcp", 4444, True)
    assert options.version == "7.2"


def test_parse_args_unknown_option_like_qemu() -> None:
    with pytest.raises(ConfigError, match=r"^-foo: invalid option$"):
        parse_args(["-foo"])


def test_session_events_only_after_negotiation() -> None:
    engine = FakeMachine()
    sent: list[dict[str, Any]] = []
    session = Session(engine, sent.append)

    session.deliver(make_event("STOP"))
    session.handle({"execute": "qmp_capabilities"})
    session.deliver(make_event("STOP"))

    assert session.runstate is Runstate.COMMAND
    assert [e["event"] for e in sent] == ["STOP"]
    assert "data" not in sent[0]


def test_session_closed_answers_nothing() -> None:
    session = Session(FakeMachine(), lambda _: None)

    session.close()

    assert session.handle({"execute": "qmp_capabilities"}) is None


def test_qemu_qmp_client_talks_to_our_server(tmp_sock_dir: str) -> None:
    path = f"{tmp_sock_dir}/ref.sock"

    async def talk() -> tuple[Any, Any, str | None]:
        client = QMPClient("test")
        await client.connect(path)
        blocks = await client.execute("query-block")
        try:
            await client.execute("no-such-command")
        except Exception as exc:  # qemu.qmp raises ExecuteError
            error = exc
        await client.disconnect()
        return blocks, client.greeting, getattr(error, "error_class", None)

    with ReferenceServer("10.0", path):
        blocks, greeting, error_class = asyncio.run(talk())

    assert blocks == []
    assert greeting is not None
    assert error_class == "CommandNotFound"


def test_legacy_qemu_monitor_protocol_negotiates_and_executes(tmp_sock_dir: str) -> None:
    path = f"{tmp_sock_dir}/ref.sock"
    with ReferenceServer("7.2", path):
        qmp = QEMUMonitorProtocol(path)
        greeting = qmp.connect(negotiate=True)
        reply = qmp.cmd_raw("query-block")
        qmp.close()

    assert greeting is not None
    assert greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert reply == {"return": []}
