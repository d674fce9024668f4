"""Proxy authentication: HTTP Basic on the proxy connection, argon2 hashes, rate limits.

Pure apart from the time: every clock is injectable.  argon2 is deliberately slow (tens
of milliseconds), so successful verifications are remembered for ``cache_ttl`` seconds:
a keep-alive browser sends its credentials with every request and must not pay for the
hash each time.  The IO layer should call :meth:`ProxyAuthenticator.authenticate_cached`
inline and run :meth:`ProxyAuthenticator.authenticate` in a worker thread only when that
returns None, so a hash never blocks the event loop.

Failed logins are counted per client address (:class:`FailureLimiter`); past the limit
that address is refused (429 with Retry-After) for a while without hashing anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tlsgate.config.model import ProxyAuthSettings, TlsgateConfig, User

Clock = Callable[[], float]

AUTH_OK = 0
AUTH_FAILED = 12209
"""Answer 407 with :func:`proxy_authenticate_header` so the client asks again."""
TOO_MANY_FAILURES = 429
"""Answer 429 with ``Retry-After: AuthResult.retry_after``."""

_HASHER = PasswordHasher()
# Verified against when the user does not exist, so an unknown name takes as long as a
# wrong password and user names cannot be probed by timing.
_DUMMY_HASH = _HASHER.hash("tlsgate: no such user")


def hash_password(password: str) -> str:
    """The argon2id hash kept in the configuration (``users[].password_hash``)."""
    return _HASHER.hash(password)


def parse_proxy_authorization(header: bytes) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → ``(user, password)``; None if not that form.

    The scheme is case-insensitive (RFC 9110); the credentials are UTF-8 (RFC 7617's
    ``charset="UTF-8"``), else Latin-1 as older clients send.
    """
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


def proxy_authenticate_header(realm: str) -> bytes:
    """The value of ``Proxy-Authenticate`` for a 407: ``Basic realm="…", charset="UTF-8"``."""
    quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{quoted}", charset="UTF-8"'.encode()


def users_by_name(users: Iterable[User]) -> dict[str, tuple[str, str]]:
    """Enabled users: lower-case name → (name as configured, argon2 hash)."""
    return {u.name.lower(): (u.name, u.password_hash) for u in users if u.enabled}


class VerificationCache:
    """Successful (user, hash, sha256(password)) checks, remembered for ``ttl`` seconds.

    The stored hash is part of the key, so a changed password invalidates old entries.
    Only a digest of the password is kept.
    """

    def __init__(self, ttl: float = 60.0, *, clock: Clock = time.monotonic, size: int = 10_000):
        self.ttl = ttl
        self.clock = clock
        self.size = size
        self._entries: dict[tuple[str, str, bytes], float] = {}

    @staticmethod
    def key(user: str, stored_hash: str, password: str) -> tuple[str, str, bytes]:
        return (
            user,
            stored_hash,
            hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest(),
        )

    def hit(self, key: tuple[str, str, bytes]) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= self.clock():
            del self._entries[key]
            return False
        return True

    def add(self, key: tuple[str, str, bytes]) -> None:
        if self.ttl <= 0:
            return
        now = self.clock()
        if len(self._entries) >= self.size:
            self._entries = {k: t for k, t in self._entries.items() if t > now}
            if len(self._entries) >= self.size:
                self._entries.clear()
        self._entries[key] = now + self.ttl


_DEFAULT_CACHE = VerificationCache()


def verify(
    users: Mapping[str, tuple[str, str]] | Mapping[str, str],
    user: str,
    password: str,
    *,
    cache: VerificationCache | None = None,
) -> bool:
    """Is ``password`` right for ``user``?  ``users`` from :func:`users_by_name` (or a plain
    lower-case name → hash mapping).  Successes are cached (see :class:`VerificationCache`).
    """
    c = _DEFAULT_CACHE if cache is None else cache
    entry = users.get(user.lower())
    stored = entry[1] if isinstance(entry, tuple) else entry
    if stored is None:
        _check(_DUMMY_HASH, password)
        return False
    key = c.key(user.lower(), stored, password)
    if c.hit(key):
        return True
    if _check(stored, password):
        c.add(key)
        return True
    return False


def _check(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class FailureLimiter:
    """At most ``max_failures`` failed logins per client address within ``window`` seconds;
    then that address is refused for ``block`` seconds.  Pure but for the clock."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        block: float = 300.0,
        *,
        clock: Clock = time.monotonic,
        size: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.clock = clock
        self.size = size
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it is not blocked."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    def failure(self, address: str) -> float:
        """Count a failed login; returns :meth:`retry_after` (non-zero once blocked)."""
        now = self.clock()
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.size:
                self._prune(now)
            times = self._failures[address] = deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            del self._failures[address]
            self._blocked[address] = now + self.block
            return self.block
        return 0.0

    def success(self, address: str) -> None:
        self._failures.pop(address, None)

    def _prune(self, now: float) -> None:
        self._failures = {
            a: t for a, t in self._failures.items() if t and t[-1] > now - self.window
        }
        self._blocked = {a: u for a, u in self._blocked.items() if u > now}


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Who the client is, as far as its Proxy-Authorization header says."""

    user: str | None
    """The user name as configured when authenticated, else None (log it as anonymous)."""
    authenticated: bool
    status: int
    """0: authenticated, or no credentials sent (the access policy decides whether that
    is enough); 12209: wrong or malformed credentials (answer 407); 429: too many failures
    from this address (answer 429 with Retry-After)."""
    reason: str
    retry_after: int = 0


NO_CREDENTIALS = AuthResult(None, False, AUTH_OK, "no credentials")


class ProxyAuthenticator:
    """Users and limits of one configuration; shared by every client connection."""

    def __init__(
        self,
        users: Iterable[User],
        settings: ProxyAuthSettings | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        s = settings or ProxyAuthSettings()
        self.settings = s
        self.users = users_by_name(users)
        self.cache = VerificationCache(s.cache_ttl, clock=clock)
        self.limiter = FailureLimiter(
            s.max_failures, s.failure_window, s.block_duration, clock=clock
        )

    @classmethod
    def compile(cls, config: TlsgateConfig, *, clock: Clock = time.monotonic) -> ProxyAuthenticator:
        return cls(config.users, config.proxy_auth, clock=clock)

    @property
    def challenge(self) -> bytes:
        """``Proxy-Authenticate`` value for a 407."""
        return proxy_authenticate_header(self.settings.realm)

    def authenticate_cached(self, client_ip: str, header: bytes | None) -> AuthResult | None:
        """The result when it needs no argon2 hash (no header, blocked, malformed, cached);
        None means: call :meth:`authenticate` (in a worker thread)."""
        if header is None:
            return NO_CREDENTIALS
        blocked = self._blocked(client_ip)
        if blocked is not None:
            return blocked
        creds = parse_proxy_authorization(header)
        if creds is None:
            return self._failed(client_ip, "the Proxy-Authorization header is not HTTP Basic")
        user, password = creds
        entry = self.users.get(user.lower())
        if entry is not None and self.cache.hit(self.cache.key(user.lower(), entry[1], password)):
            return AuthResult(entry[0], True, AUTH_OK, f"authenticated as {entry[0]}")
        return None

    def authenticate(self, client_ip: str, header: bytes | None) -> AuthResult:
        """Check the client's Proxy-Authorization header (may hash: tens of ms)."""
        quick = self.authenticate_cached(client_ip, header)
        creds = None if header is None else parse_proxy_authorization(header)
        if quick is not None or creds is None:
            return quick or NO_CREDENTIALS
        user, password = creds
        if verify(self.users, user, password, cache=self.cache):
            self.limiter.success(client_ip)
            name = self.users[user.lower()][0]
            return AuthResult(name, True, AUTH_OK, f"authenticated as {name}")
        return self._failed(client_ip, f"wrong user name or password for {user!r}")

    def _blocked(self, client_ip: str) -> AuthResult | None:
        left = self.limiter.retry_after(client_ip)
        if not left:
            return None
        return AuthResult(
            None,
            False,
            TOO_MANY_FAILURES,
            f"too many failed proxy logins from {client_ip}; try again in {_seconds(left)}",
            retry_after=max(1, round(left)),
        )

    def _failed(self, client_ip: str, reason: str) -> AuthResult:
        if self.limiter.failure(client_ip):
            blocked = self._blocked(client_ip)
            if blocked is not None:
                return blocked
        return AuthResult(None, False, AUTH_FAILED, reason)


def _seconds(left: float) -> str:
    s = max(1, round(left))
    return f"{s} s" if s < 120 else f"{round(s / 60)} min"
