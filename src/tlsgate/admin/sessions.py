"""Console sessions: random cookie tokens kept in memory, a CSRF token per session, and
the login rate limit.  Pure but for the clock and the random source.

The session cookie is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` over TLS); every
state-changing request must also carry the session's CSRF token in the
``X-CSRF-Token`` header, which a cross-site page cannot read or send.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tlsgate.policy.auth import FailureLimiter

COOKIE = "tlsgate_admin"
CSRF_HEADER = "X-CSRF-Token"
Clock = Callable[[], float]


@dataclass(slots=True)
class Session:
    user: str
    csrf: str
    expires: float
    flash: list[str] = field(default_factory=list)
    via: str = "console"
    """How the request was authenticated: "console" (a login session) or "API token"
    (then ``user`` is the token's name and there is no CSRF token)."""


class Sessions:
    """Sessions by token; idle ones expire after ``idle`` seconds."""

    def __init__(self, idle: float = 8 * 3600, *, clock: Clock = time.monotonic) -> None:
        self.idle = idle
        self.clock = clock
        self._by_token: dict[str, Session] = {}
        self.limiter = FailureLimiter(max_failures=5, window=60.0, block=300.0, clock=clock)

    def create(self, user: str) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), self.clock() + self.idle)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = self.clock()
        if session.expires <= now:
            del self._by_token[token]
            return None
        session.expires = now + self.idle
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf, presented)
