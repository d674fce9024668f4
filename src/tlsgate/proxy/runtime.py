"""State shared by every client session of one member: config, CA, pool, caches, log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from tlsgate.config.model import Limits, TlsgateConfig, UpstreamSettings
from tlsgate.log.record import LogRecord
from tlsgate.policy.access import AccessPolicy, is_self, local_host_names
from tlsgate.policy.auth import ProxyAuthenticator
from tlsgate.policy.inspection import LearnedEntry
from tlsgate.proxy.upstream import UpstreamPool
from tlsgate.tls.ca import LeafMinter
from tlsgate.tls.upstream import UpstreamTLS


class RecordSink(Protocol):
    def submit(self, record: LogRecord) -> None: ...


class LearnedStore(Protocol):
    """Where learned exceptions are shared between members (the configuration store)."""

    def learn(self, host: str, port: int, reason: str, ttl_seconds: float) -> None: ...


@dataclass(slots=True)
class _Known:
    expires: float


class LearnedCache:
    """Learned inspection exceptions as this member knows them (hot-path lookups).

    The store is the source of truth shared by all members; this cache is refreshed
    from it and updated at once when this member learns something.
    """

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._entries: dict[tuple[str, int], LearnedEntry] = {}
        self._now = now

    def get(self, host: str, port: int) -> LearnedEntry | None:
        entry = self._entries.get((host, port))
        if entry is None:
            return None
        if entry.expires_at <= self._now():
            del self._entries[(host, port)]
            return None
        return entry

    def learn(self, host: str, port: int, reason: str, ttl: timedelta) -> LearnedEntry:
        now = self._now()
        old = self._entries.get((host, port))
        entry = LearnedEntry(
            host=host,
            port=port,
            reason=reason,
            first_seen=old.first_seen if old else now,
            last_seen=now,
            hits=(old.hits + 1) if old else 1,
            expires_at=now + ttl,
        )
        self._entries[(host, port)] = entry
        return entry

    def replace_all(self, entries: list[LearnedEntry], keep_recent: float = 10.0) -> None:
        """The store's list; entries this member learned in the last ``keep_recent``
        seconds stay even if the store has not recorded them yet."""
        fresh = {(e.host, e.port): e for e in entries}
        cutoff = self._now() - timedelta(seconds=keep_recent)
        for key, old in self._entries.items():
            if key not in fresh and old.last_seen >= cutoff and old.hits == 1:
                fresh[key] = old
        self._entries = fresh

    def entries(self) -> list[LearnedEntry]:
        now = self._now()
        return [e for e in self._entries.values() if e.expires_at > now]


class Runtime:
    """Everything sessions share.  ``config`` is swapped atomically on apply.

    Sessions read ``runtime.config`` once per request (and once per CONNECT), so a
    request in flight finishes under the configuration it started with.
    """

    def __init__(
        self,
        *,
        config: TlsgateConfig,
        minter: LeafMinter,
        log: RecordSink,
        member: str,
        inspect_override: bool | None = None,
        upstream_ca_override: UpstreamSettings | None = None,
        learned_store: LearnedStore | None = None,
    ) -> None:
        self.minter = minter
        self.log = log
        self.member = member
        self.inspect_override = inspect_override
        self._upstream_override = upstream_ca_override
        self.learned = LearnedCache()
        self.learned_store = learned_store
        self.known_inspectable: dict[tuple[str, int], float] = {}
        self.draining = False
        self.sessions: set[object] = set()
        self.tunnels: set[object] = set()
        """Client connections spliced to a server (they outlive their sessions)."""
        self.idle_sessions: set[object] = set()
        self.fast_served = 0
        """Requests answered by the session's fast path (a statistic; see session.py)."""
        self.config = config
        self._hot_settings(config)
        self.policy = AccessPolicy.compile(config)
        self.auth = ProxyAuthenticator.compile(config)
        self.listeners: list[tuple[str, int]] = []
        """The proxy's own bound addresses (proxy and admin): never reachable through it.
        Add with :meth:`add_listener`."""
        self.local_names = local_host_names()
        self._self_cache: dict[tuple[str, int], bool] = {}
        self.upstream_tls = UpstreamTLS(*self._upstream_trust(config))
        self.pool = UpstreamPool(
            idle_timeout=config.timeouts.upstream_idle_pooled,
            per_key=config.limits.pooled_per_server,
            total=config.limits.pooled_total,
        )
        self.revision = 0

    def _upstream_trust(self, config: TlsgateConfig) -> tuple[Path | None, bool, bool]:
        up = self._upstream_override or config.upstream
        return up.ca_file, up.use_system_trust, config.inspection.detect_client_certificates

    def set_config(self, config: TlsgateConfig, revision: int = 0) -> None:
        """Swap to a new configuration (raises ConfigError and keeps the old one if invalid)."""
        trust = self._upstream_trust(config)
        policy = AccessPolicy.compile(config)
        auth = ProxyAuthenticator.compile(config)
        upstream_tls = self.upstream_tls
        if trust != self._upstream_trust(self.config):
            upstream_tls = UpstreamTLS(*trust)  # may raise: nothing swapped yet
            self.pool.close_all()
        self.upstream_tls = upstream_tls
        self.policy, self.auth = policy, auth
        self.config = config
        self._hot_settings(config)
        self.pool.idle_timeout = config.timeouts.upstream_idle_pooled
        self.pool.per_key = config.limits.pooled_per_server
        self.pool.total = config.limits.pooled_total
        self.revision = revision
        self.known_inspectable.clear()  # exceptions may have changed

    def _hot_settings(self, config: TlsgateConfig) -> None:
        """The settings every keep-alive request reads, as plain attributes of this
        (compiled) object: reading one through the pydantic models costs ~300
        instructions per level (their ``__getattr__`` hook), ~5 per request."""
        self.limits: Limits = config.limits
        self.client_idle: float = config.timeouts.client_idle
        self.upstream_response: float = config.timeouts.upstream_response

    def add_listener(self, address: tuple[str, int]) -> None:
        self.listeners.append(address)
        self._self_cache.clear()

    def is_self(self, host: str, port: int) -> bool:
        """:func:`~tlsgate.policy.access.is_self` for this member's listeners, cached
        (asked once per request; an inspected tunnel asks the same each time)."""
        key = (host, port)
        hit = self._self_cache.get(key)
        if hit is None:
            if len(self._self_cache) >= 10_000:
                self._self_cache.clear()
            hit = self._self_cache[key] = is_self(
                host, port, self.listeners, local_names=self.local_names
            )
        return hit

    @property
    def inspection_enabled(self) -> bool:
        if self.inspect_override is not None:
            return self.inspect_override
        return self.config.inspection.enabled

    def is_known_inspectable(self, host: str, port: int) -> bool:
        expires = self.known_inspectable.get((host, port))
        return expires is not None and expires > time.monotonic()

    def mark_inspectable(self, host: str, port: int, ttl: float = 600.0) -> None:
        if len(self.known_inspectable) > 100_000:
            self.known_inspectable.clear()
        self.known_inspectable[(host, port)] = time.monotonic() + ttl

    def learn(self, host: str, port: int, reason: str) -> None:
        ttl = timedelta(hours=self.config.inspection.learned_ttl_hours)
        self.learned.learn(host, port, reason, ttl)
        self.known_inspectable.pop((host, port), None)
        store = self.learned_store
        if store is not None:
            task = asyncio.get_running_loop().run_in_executor(
                None, store.learn, host, port, reason, ttl.total_seconds()
            )
            task.add_done_callback(_ignore_result)


def _ignore_result(fut: asyncio.Future[None]) -> None:
    # The store logs its own outages; the local cache already holds the entry.
    if not fut.cancelled():
        fut.exception()
