"""Run the admin application inside the member's event loop (uvicorn, no signal
handlers of its own: the member's stop signal stops it too), over HTTPS with a
certificate from tlsgate's CA when asked (:mod:`.tls`).

At start, the admin users of an older version's ``HOME/admin-users.json`` are imported
into the configuration store once (:func:`~tlsgate.admin.users.import_users_file`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Generator

import uvicorn

from tlsgate.admin.app import create_app
from tlsgate.admin.tls import ConsoleCertificates
from tlsgate.admin.users import import_users_file, users_file
from tlsgate.config.home import Home
from tlsgate.errors import ConfigError, StoreError
from tlsgate.proxy.server import Listen
from tlsgate.store import Store

log = logging.getLogger("tlsgate.admin")


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The member owns SIGINT/SIGTERM and stops us through stop().
        yield


class AdminServer:
    """The console/API listener; ``address`` is the bound ``(host, port)``."""

    def __init__(
        self,
        home: Home,
        store_url: str | None,
        listen: Listen,
        *,
        certificates: ConsoleCertificates | None = None,
    ) -> None:
        self.home = home
        self.listen = listen
        self.certificates = certificates
        self.app = create_app(home, store_url, tls=certificates is not None)
        self.sock = _bind(listen)
        addr = self.sock.getsockname()
        self.address: tuple[str, int] = (str(addr[0]), int(addr[1]))
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, proxy_headers=False
        )
        if certificates is not None:
            # Loaded now so that our context is the one served (uvicorn would otherwise
            # build its own from files in load()).
            config.load()
            config.ssl = certificates.context
        self.server = _EmbeddedServer(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.app.state.admin.with_credentials(self._import_users_file)
        except (ConfigError, StoreError) as exc:
            # The console still starts: logins wait for the store like every other page.
            log.warning("admin users of %s not imported: %s", users_file(self.home), exc.one_line())
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()  # raises why it did not start
        host, port = self.address
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.certificates is None:
            log.info("admin console on http://%s/ (API: /api, OpenAPI: /api/openapi.json)", shown)
        else:
            log.info(
                "admin console on https://%s/ (API: /api, OpenAPI: /api/openapi.json); "
                "certificate from tlsgate's CA for %s",
                shown,
                ", ".join(self.certificates.names),
            )

    def _import_users_file(self, store: Store) -> None:
        imported = import_users_file(self.home, store)
        if imported is not None:
            log.info(
                "admin users: imported %d user(s) (%s) from %s into the store %s; the "
                "store holds them now and the file is no longer read (it was left in place)",
                len(imported),
                ", ".join(imported) or "none new",
                users_file(self.home),
                store.location,
            )

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.app.state.admin.close()
        self.sock.close()


def _bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(
            f"cannot listen on {listen} for the admin console: {why}",
            fix="choose another address with --admin HOST:PORT, or --admin off",
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock
