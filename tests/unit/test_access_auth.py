"""Proxy authentication: Basic parsing, argon2 verification and its cache, rate limiting."""

from __future__ import annotations

import base64

import pytest

from tlsgate.config.model import ProxyAuthSettings, TlsgateConfig, User
from tlsgate.policy import auth
from tlsgate.policy.auth import (
    AUTH_FAILED,
    AUTH_OK,
    TOO_MANY_FAILURES,
    FailureLimiter,
    ProxyAuthenticator,
    VerificationCache,
    hash_password,
    parse_proxy_authorization,
    proxy_authenticate_header,
    users_by_name,
    verify,
)

ALICE_HASH = hash_password("wonder land")
USERS = [User(name="Alice", password_hash=ALICE_HASH)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str, scheme: str = "Basic") -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"{scheme} {token}".encode()


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "secret"), ("alice", "secret")),
        (basic("alice", "se:cr:et"), ("alice", "se:cr:et")),
        (basic("alice", ""), ("alice", "")),
        (basic("alice", "secret", "basic"), ("alice", "secret")),
        (basic("alice", "secret", "BASIC"), ("alice", "secret")),
        (b"  " + basic("alice", "secret") + b"  ", ("alice", "secret")),
        (b"Basic " + base64.b64encode("jürgen:päss".encode()), ("jürgen", "päss")),
        (b"Basic " + base64.b64encode("j\xfcrgen:x".encode("latin-1")), ("jürgen", "x")),
        (b"Bearer abc", None),
        (b"Basic", None),
        (b"Basic !!!notbase64", None),
        (b"Basic " + base64.b64encode(b"no-colon"), None),
        (b"Basic " + base64.b64encode(b":password-only"), None),
        (b"", None),
    ],
)
def test_parse_proxy_authorization(header: bytes, expected: tuple[str, str] | None) -> None:
    assert parse_proxy_authorization(header) == expected


def test_proxy_authenticate_header() -> None:
    assert proxy_authenticate_header("tlsgate") == b'Basic realm="tlsgate", charset="UTF-8"'
    assert (
        proxy_authenticate_header('a "b" \\c') == b'Basic realm="a \\"b\\" \\\\c", charset="UTF-8"'
    )


# -- verification -------------------------------------------------------------------------


def test_hash_is_argon2id_and_the_model_accepts_it() -> None:
    assert ALICE_HASH.startswith("$argon2id$")
    assert "wonder" not in ALICE_HASH
    TlsgateConfig(users=USERS)


def test_model_refuses_a_plain_password() -> None:
    with pytest.raises(ValueError, match="not an argon2 hash"):
        User(name="bob", password_hash="secret")


def test_verify() -> None:
    users = users_by_name(USERS)
    cache = VerificationCache()
    assert verify(users, "alice", "wonder land", cache=cache)
    assert verify(users, "ALICE", "wonder land", cache=cache)
    assert not verify(users, "alice", "wonder", cache=cache)
    assert not verify(users, "nobody", "wonder land", cache=cache)
    assert not verify({"x": "garbage"}, "x", "y", cache=cache)


def test_disabled_users_cannot_log_in() -> None:
    users = users_by_name([User(name="alice", password_hash=ALICE_HASH, enabled=False)])
    assert not verify(users, "alice", "wonder land", cache=VerificationCache())


def test_cache_remembers_success_for_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    cache = VerificationCache(60, clock=clock)
    users = users_by_name(USERS)
    calls: list[str] = []
    real = auth._check

    def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return real(stored, password)

    monkeypatch.setattr(auth, "_check", counting)
    assert verify(users, "alice", "wonder land", cache=cache)
    assert verify(users, "alice", "wonder land", cache=cache)
    assert len(calls) == 1  # the second check came from the cache
    assert not verify(users, "alice", "wrong", cache=cache)  # failures are never cached
    assert len(calls) == 2
    clock.now += 61
    assert verify(users, "alice", "wonder land", cache=cache)
    assert len(calls) == 3


def test_cache_is_keyed_by_the_stored_hash() -> None:
    cache = VerificationCache()
    assert verify(users_by_name(USERS), "alice", "wonder land", cache=cache)
    changed = users_by_name([User(name="alice", password_hash=hash_password("new one"))])
    assert not verify(changed, "alice", "wonder land", cache=cache)


# -- rate limiting ----------------------------------------------------------------------------


def test_failure_limiter() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=60, block=300, clock=clock)
    assert limiter.failure("10.0.0.1") == 0
    clock.now += 30
    assert limiter.failure("10.0.0.1") == 0
    assert limiter.retry_after("10.0.0.1") == 0
    assert limiter.failure("10.0.0.2") == 0  # another address counts apart
    clock.now += 10
    assert limiter.failure("10.0.0.1") == 300  # third failure within the window
    assert limiter.retry_after("10.0.0.1") == 300
    assert limiter.retry_after("10.0.0.2") == 0
    clock.now += 299
    assert limiter.retry_after("10.0.0.1") == pytest.approx(1)
    clock.now += 1
    assert limiter.retry_after("10.0.0.1") == 0


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=60, block=300, clock=clock)
    for _ in range(10):
        assert limiter.failure("10.0.0.1") == 0
        assert limiter.failure("10.0.0.1") == 0
        clock.now += 61


def test_success_resets_the_count() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=2, window=60, block=300, clock=clock)
    limiter.failure("10.0.0.1")
    limiter.success("10.0.0.1")
    assert limiter.failure("10.0.0.1") == 0


# -- the authenticator, as the proxy uses it ----------------------------------------------------


def authenticator(clock: Clock) -> ProxyAuthenticator:
    settings = ProxyAuthSettings(max_failures=3, failure_window=60, block_duration=120)
    return ProxyAuthenticator(USERS, settings, clock=clock)


def test_authenticate_flow() -> None:
    clock = Clock()
    a = authenticator(clock)
    assert a.authenticate("10.0.0.1", None) == auth.NO_CREDENTIALS
    ok = a.authenticate("10.0.0.1", basic("alice", "wonder land"))
    assert (ok.user, ok.authenticated, ok.status) == ("Alice", True, AUTH_OK)
    # Now cached: decided without hashing, inline on the event loop.
    cached = a.authenticate_cached("10.0.0.1", basic("ALICE", "wonder land"))
    assert cached is not None and cached.user == "Alice"
    assert a.authenticate_cached("10.0.0.1", basic("alice", "wrong")) is None

    bad = a.authenticate("10.0.0.9", basic("alice", "wrong"))
    assert (bad.authenticated, bad.status) == (False, AUTH_FAILED)
    assert "wrong user name or password" in bad.reason
    malformed = a.authenticate("10.0.0.9", b"Digest username=x")
    assert (malformed.status, malformed.reason) == (
        AUTH_FAILED,
        "the Proxy-Authorization header is not HTTP Basic",
    )
    third = a.authenticate("10.0.0.9", basic("nobody", "x"))
    assert (third.status, third.retry_after) == (TOO_MANY_FAILURES, 120)
    assert third.reason == "too many failed proxy logins from 10.0.0.9; try again in 2 min"
    # Blocked: even the right password is refused, without hashing.
    again = a.authenticate_cached("10.0.0.9", basic("alice", "wonder land"))
    assert again is not None and again.status == TOO_MANY_FAILURES
    # Other clients are not affected.
    assert a.authenticate("10.0.0.1", basic("alice", "wonder land")).authenticated
    clock.now += 121
    assert a.authenticate("10.0.0.9", basic("alice", "wonder land")).authenticated


def test_compile_from_config() -> None:
    cfg = TlsgateConfig(users=USERS, proxy_auth=ProxyAuthSettings(realm="Corp proxy"))
    a = ProxyAuthenticator.compile(cfg)
    assert a.challenge == b'Basic realm="Corp proxy", charset="UTF-8"'
    assert a.authenticate("127.0.0.1", basic("alice", "wonder land")).user == "Alice"
