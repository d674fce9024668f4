"""What every request of the admin application needs: where the store and the log are,
the CA, the sessions, and the shared helpers that check a request's session and CSRF
token (used by both the JSON API and the HTML console).

Admin users and API tokens are read from the configuration store at every request
(through one store handle kept open for that), so a user or token removed with
``tlsgate admin`` on any host is refused at once by every member.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.requests import Request

from tlsgate.admin.actions import StoreAccess
from tlsgate.admin.sessions import COOKIE, CSRF_HEADER, Session, Sessions, csrf_ok
from tlsgate.config.home import Home
from tlsgate.log.database import LogDatabase
from tlsgate.log.sinks import open_log_sink
from tlsgate.store import Store, open_store

T = TypeVar("T")


@dataclass
class AdminState:
    home: Home
    store_url: str | None
    tls: bool = False
    """Served over TLS: session cookies get ``Secure``."""
    sessions: Sessions = field(default_factory=Sessions)
    log_db: LogDatabase | None = None
    _credentials: Store | None = field(default=None, init=False, repr=False)
    _credentials_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False
    )

    @property
    def access(self) -> StoreAccess:
        return StoreAccess(self.home, self.store_url)

    def log(self) -> LogDatabase:
        if self.log_db is None:
            self.log_db = open_log_sink(self.store_url, self.home)
        return self.log_db

    async def with_credentials(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` in a worker thread on the store handle kept for the admin
        users and tokens (checked at every request, so not reopened each time)."""

        def work() -> T:
            with self._credentials_lock:
                if self._credentials is None:
                    self._credentials = open_store(self.store_url, self.home)
                store = self._credentials
            return fn(store)  # the store's backend serialises its own use

        return await asyncio.to_thread(work)

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
        with self._credentials_lock:
            if self._credentials is not None:
                self._credentials.close()
                self._credentials = None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
