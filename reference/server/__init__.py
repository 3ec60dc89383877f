"""The QMP server in front of the reference machine, speaking QEMU's exact wire protocol.

Layers, each only using the ones above it:

- :mod:`.qjson`: QEMU's JSON dialect (streaming lexer, limits, parser, QDict-ordered writer);
- :mod:`.protocol`: QMP framing and request validation (``qmp_dispatch_check_obj``);
- :mod:`.session`: one connection's state: capabilities negotiation, dispatch to the engine;
- :mod:`.events`: timestamps and delivery of events to negotiated sessions;
- :mod:`.server`: unix/TCP/stdio monitors with asyncio, one client at a time per monitor.

Tutorial::

    import asyncio
    from reference.machine import Machine
    from reference.server import Listener, QMPServer

    server = QMPServer(Machine("10.0"), [Listener("unix", path="/tmp/qmp.sock")])
    asyncio.run(server.run())        # until a client sends "quit"

Nothing here knows block semantics: everything but ``qmp_capabilities`` goes to the engine.
"""

from .errors import ConfigError, ServerError, StateError
from .server import Listener, QMPServer

__all__ = ["ConfigError", "Listener", "QMPServer", "ServerError", "StateError"]
