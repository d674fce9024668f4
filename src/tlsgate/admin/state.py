"""What every request of the admin application needs: where the store and the log are,
the CA, the sessions, and the shared helpers that check a request's session and CSRF
token (used by both the JSON API and the HTML console)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.requests import Request

from tlsgate.admin.actions import StoreAccess
from tlsgate.admin.sessions import COOKIE, CSRF_HEADER, Session, Sessions, csrf_ok
from tlsgate.admin.users import AdminUser, load_users
from tlsgate.config.home import Home
from tlsgate.log.database import LogDatabase
from tlsgate.log.sinks import open_log_sink
from tlsgate.store import Store

T = TypeVar("T")


@dataclass
class AdminState:
    home: Home
    store_url: str | None
    tls: bool = False
    """Served over TLS: session cookies get ``Secure``."""
    sessions: Sessions = field(default_factory=Sessions)
    log_db: LogDatabase | None = None

    @property
    def access(self) -> StoreAccess:
        return StoreAccess(self.home, self.store_url)

    def log(self) -> LogDatabase:
        if self.log_db is None:
            self.log_db = open_log_sink(self.store_url, self.home)
        return self.log_db

    def users(self) -> dict[str, AdminUser]:
        return load_users(self.home)

    async def with_store(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` in a worker thread with a freshly opened store."""

        def work() -> T:
            with self.access.opened() as store:
                return fn(store)

        return await asyncio.to_thread(work)

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def csrf_valid(self, request: Request, session: Session) -> bool:
        return csrf_ok(session, request.headers.get(CSRF_HEADER))

    def close(self) -> None:
        if self.log_db is not None:
            self.log_db.close()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
