"""The listener and the member's lifecycle: start, serve, drain on SIGTERM/SIGINT, stop.

As uvicorn's Server does: install signal handlers, stop accepting, let requests in
flight finish within ``timeouts.shutdown_grace``, cut the rest, flush the log, exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from tlsgate.errors import ConfigError
from tlsgate.proxy.connection import Connection
from tlsgate.proxy.runtime import Runtime
from tlsgate.proxy.session import Session

log = logging.getLogger("tlsgate.server")


class ClientConnection(Connection):
    """An accepted client connection: starts its session when it is made."""

    __slots__ = ("_runtime", "_task")

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.get_running_loop().create_task(Session(self._runtime, self).run())


class Listening(Protocol):
    """A listening server: ``asyncio.Server``, or an event loop's own class in C (whose
    ``sockets`` is a list, and which compiled code would refuse as ``asyncio.Server``)."""

    @property
    def sockets(self) -> Sequence[socket.socket]: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)")
        host = host.strip("[]") or "127.0.0.1"
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def start_listener(
    runtime: Runtime, listen: Listen, *, reuse_port: bool = False
) -> Listening:
    """Listen on ``listen``; ``reuse_port``: share the port with other worker processes."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: ClientConnection(runtime),
            listen.host,
            listen.port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=2048,
        )
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(
            f"cannot listen on {listen}: {why}",
            fix="stop the other process or choose another address with --listen HOST:PORT",
        ) from None
    listening = cast(Listening, server)
    for sock in listening.sockets:
        addr = sock.getsockname()
        runtime.add_listener((str(addr[0]), int(addr[1])))
    return listening


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def drain(runtime: Runtime, server: Listening, grace: float) -> None:
    """Stop accepting, close idle connections, give busy ones ``grace`` seconds."""
    server.close()
    runtime.draining = True
    for s in list(runtime.idle_sessions):
        assert isinstance(s, Session)
        s.conn.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while (runtime.sessions or runtime.tunnels) and loop.time() < deadline:
        for s in list(runtime.idle_sessions):
            assert isinstance(s, Session)
            s.conn.close()
        await asyncio.sleep(0.05)
    if runtime.sessions:
        log.warning(
            "shutdown: cutting %d connection(s) still busy after %.0f s",
            len(runtime.sessions),
            grace,
        )
        for s in list(runtime.sessions):
            assert isinstance(s, Session)
            s.conn.abort()
        await asyncio.sleep(0)
    if runtime.tunnels:
        # Tunnels still open after the grace period are closed; their records are
        # written as the connections go (before the log is flushed).
        for conn in list(runtime.tunnels):
            assert isinstance(conn, Connection)
            conn.close()
        await asyncio.sleep(0.1)
    runtime.pool.close_all()


async def serve_until_stopped(
    runtime: Runtime,
    listen: Listen,
    *,
    on_started: Callable[[Listening], Awaitable[None]] | None = None,
    on_stopping: Callable[[], None] | None = None,
    reuse_port: bool = False,
) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    server = await start_listener(runtime, listen, reuse_port=reuse_port)
    if on_started is not None:
        await on_started(server)
    await stop.wait()
    if on_stopping is not None:
        on_stopping()
    log.info("stopping: no new connections; draining requests in flight")
    await drain(runtime, server, runtime.config.timeouts.shutdown_grace)
