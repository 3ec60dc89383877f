"""Listeners and the serving loop: QEMU's QMP monitors, with asyncio.

A :class:`Listener` says where a monitor listens (unix socket, TCP, or stdio) and how it writes
(``pretty``).  :class:`QMPServer` serves one engine on all of them until ``quit`` or
:meth:`QMPServer.stop` (the launcher calls it on SIGTERM/SIGINT).

What QEMU does, and so what this does:

- A socket monitor serves **one client at a time**.  QEMU stops accepting while a client is
  attached; a second client's ``connect()`` succeeds (kernel backlog) but it gets nothing, not
  even the greeting, until the first disconnects; then its queued input is processed.
- ``wait=on`` (also plain ``server``) blocks startup until the first client connects; monitors
  after it on the command line do not exist before that.
- Commands run one at a time across all monitors.  Events a command causes are sent *before* its
  reply (QEMU's ``stop`` sends ``STOP`` then ``{"return": {}}``; ``quit`` sends ``SHUTDOWN``
  first), to every negotiated session; events happening between commands are polled.
- Block jobs run in the background: the poll advances the engine's clock by the real time
  that passed (``advance(ns)``), so jobs progress between commands as QEMU's do.
- After ``quit``'s reply every connection closes, the unix socket files are removed, the engine
  is closed and :meth:`QMPServer.run` returns.
- A client vanishing mid-command only ends its own session.  End of input on stdio ends that
  session but not the server (QEMU keeps running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from .errors import StateError
from .events import EventHub, make_event
from .protocol import Decoder, encode
from .session import Engine, Session

__all__ = ["Listener", "QMPServer", "Runstate", "program_name"]

logger = logging.getLogger(__name__)

_READ_SIZE: Final = 65536
#: How often events that happen between commands (e.g. job completion) are looked for.
_EVENT_POLL_SECONDS: Final = 0.05
#: ``qio_net_listener_open_sync(..., 1, ...)``: QEMU's listen backlog for monitor sockets.
_BACKLOG: Final = 1


@dataclass(frozen=True)
class Listener:
    """One QMP monitor: ``unix`` (``path``), ``tcp`` (``host``, ``port``) or ``stdio``."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0
    #: ``wait=on``: startup blocks until the first client connects.
    wait: bool = False
    #: ``-mon ...,pretty=on``: replies and events are indented, four spaces a level.
    pretty: bool = False
    #: The command-line option that created it, for QEMU-style messages.
    origin: str = ""

    def describe(self) -> str:
        """QEMU's chardev description, as in ``disconnected:unix:PATH,server=on``."""
        if self.kind == "unix":
            return f"disconnected:unix:{self.path},server=on"
        return f"disconnected:tcp:{self.host}:{self.port},server=on"


class Runstate(Enum):
    """The server's life: ``IDLE`` → ``RUNNING`` → ``STOPPING`` → ``STOPPED``."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _Connection:
    """One client: its session, its decoder and how to write to it."""

    def __init__(
        self, server: QMPServer, write: Callable[[bytes], None], pretty: bool, name: str
    ) -> None:
        self.name = name
        self._write = write
        self._pretty = pretty
        self.open = True
        self.session = Session(server.engine, self.send)
        self.decoder = Decoder()

    def send(self, message: dict[str, Any]) -> None:
        if not self.open:
            return
        try:
            self._write(encode(message, pretty=self._pretty))
        except (OSError, RuntimeError):
            self.open = False  # the client went away; its reader will notice


class QMPServer:
    """Serves one engine on any number of QMP monitors."""

    def __init__(self, engine: Engine, listeners: list[Listener]) -> None:
        self.engine = engine
        self.listeners = list(listeners)
        self.runstate = Runstate.IDLE
        self.hub = EventHub()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[socket.socket] = []
        self._writers: set[asyncio.StreamWriter] = set()
        #: Called once a listener is bound (tests use it to learn TCP ports).
        self.on_listening: Callable[[Listener, socket.socket], None] | None = None

    # ---- lifetime ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Open every monitor in command-line order, then serve until ``quit`` or :meth:`stop`."""
        if self.runstate is not Runstate.IDLE:
            raise StateError(self.runstate, Runstate.IDLE)
        self.runstate = Runstate.RUNNING
        try:
            for listener in self.listeners:
                await self._open(listener)
            self._spawn(self._poll_events())
            await self._stopped.wait()
        finally:
            await self._shutdown()

    def stop(self, reason: str | None = None) -> None:
        """Stop serving; with ``reason``, first send ``SHUTDOWN`` (``host-signal`` for signals)."""
        if self.runstate is not Runstate.RUNNING:
            return
        if reason is not None:
            self._flush_events()
            self.hub.broadcast(make_event("SHUTDOWN", {"guest": False, "reason": reason}))
        self.runstate = Runstate.STOPPING
        self._stopped.set()

    async def _shutdown(self) -> None:
        self.runstate = Runstate.STOPPING
        # As qemu_cleanup(): images are closed before the monitors' connections go away.
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 5)
            writer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sock in self._sockets:
            sock.close()
        for listener in self.listeners:
            if listener.kind == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(listener.path)
        self.runstate = Runstate.STOPPED

    def _spawn(self, work: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(work))

    # ---- monitors ------------------------------------------------------------------------------

    async def _open(self, listener: Listener) -> None:
        if listener.kind == "stdio":
            self._spawn(self._serve_stdio(listener))
            return
        sock = _bind(listener)
        self._sockets.append(sock)
        if self.on_listening is not None:
            self.on_listening(listener, sock)
        first: socket.socket | None = None
        if listener.wait:
            where = listener.origin or listener.describe()
            print(
                f"{program_name()}: {where}: info: QEMU waiting for connection on: "
                f"{listener.describe()}",
                file=sys.stderr,
                flush=True,
            )
            first, _ = await asyncio.get_running_loop().sock_accept(sock)
        self._spawn(self._accept_loop(listener, sock, first))

    async def _accept_loop(
        self, listener: Listener, sock: socket.socket, first: socket.socket | None
    ) -> None:
        """Accept, serve until that client leaves, accept the next: one client at a time."""
        loop = asyncio.get_running_loop()
        client = first
        while self.runstate is Runstate.RUNNING:
            if client is None:
                client, _ = await loop.sock_accept(sock)
            reader, writer = await asyncio.open_connection(sock=client)
            self._writers.add(writer)
            try:
                await self._serve(reader.read, writer.write, listener, writer)
            finally:
                self._writers.discard(writer)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            client = None

    async def _serve_stdio(self, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        stdout = sys.stdout.buffer

        def pump() -> None:
            # A daemon thread works for pipes, ttys and files alike and never delays exit.
            fd = sys.stdin.buffer.fileno()
            while True:
                try:
                    data = os.read(fd, _READ_SIZE)
                except OSError:
                    data = b""
                loop.call_soon_threadsafe(chunks.put_nowait, data)
                if not data:
                    return

        threading.Thread(target=pump, name="qmp-stdin", daemon=True).start()

        async def read(size: int) -> bytes:
            del size
            return await chunks.get()

        def write(data: bytes) -> None:
            stdout.write(data)
            stdout.flush()

        await self._serve(read, write, listener, None)

    async def _serve(
        self,
        read: Callable[[int], Awaitable[bytes]],
        write: Callable[[bytes], None],
        listener: Listener,
        writer: asyncio.StreamWriter | None,
    ) -> None:
        conn = _Connection(self, write, listener.pretty, listener.origin or listener.kind)
        self.hub.subscribe(conn.session.deliver)
        try:
            conn.send(conn.session.greeting())
            while self.runstate is Runstate.RUNNING and conn.open:
                try:
                    data = await read(_READ_SIZE)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                for message in conn.decoder.feed(data):
                    self._execute(conn, message)
                    if self.runstate is not Runstate.RUNNING:
                        break
                if writer is not None and conn.open:
                    try:
                        await writer.drain()
                    except (ConnectionError, OSError):
                        break
        finally:
            conn.open = False
            conn.session.close()
            self.hub.unsubscribe(conn.session.deliver)

    def _execute(self, conn: _Connection, message: Any) -> None:
        """Run one message; events it caused go out first, then its reply."""
        reply = conn.session.handle(message)
        self._flush_events()
        if reply is not None:
            conn.send(reply)
        if getattr(self.engine, "quit_requested", False):
            self.stop()

    def _flush_events(self) -> None:
        events = self.engine.take_events()
        if getattr(self.engine, "quit_requested", False) and not any(
            e.get("event") == "SHUTDOWN" for e in events
        ):
            events.append(make_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}))
        for event in events:
            self.hub.broadcast(event)

    async def _poll_events(self) -> None:
        # The engine's deterministic clock follows real time here, as QEMU's jobs run in the
        # background: block jobs progress (and emit their events) between commands.
        advance = getattr(self.engine, "advance", None)
        last = time.monotonic_ns()
        while self.runstate is Runstate.RUNNING:
            await asyncio.sleep(_EVENT_POLL_SECONDS)
            now = time.monotonic_ns()
            if advance is not None:
                advance(now - last)
            last = now
            self._flush_events()


def _bind(listener: Listener) -> socket.socket:
    """A listening, non-blocking socket with QEMU's backlog of one."""
    if listener.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listener.path)  # QEMU replaces a stale socket file
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(listener.path)
    elif listener.kind == "tcp":
        infos = socket.getaddrinfo(
            listener.host or None,
            listener.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    else:
        raise ValueError(f"unknown listener kind {listener.kind!r}")
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def program_name() -> str:
    """The prefix of messages, as QEMU's ``error_report()``: argv[0]'s basename.

    Run as ``python -m reference.cli`` that basename is a file name; say ``qmp-reference`` then.
    """
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "qmp-reference" if not name or name.endswith(".py") else name
