"""A member follows the store: it registers, loads the newest revision, swaps it in
without a restart, reports a heartbeat, and survives store outages.

PostgreSQL members are woken by NOTIFY (LISTEN ``tlsgate_config``) and also poll as a
safety net; SQLite members poll the head revision (a one-row read) twice a second.
While the store is unreachable the member keeps serving on its last good
configuration, retries with capped exponential backoff, and logs one warning when the
outage starts and one line when it ends.  The last good revision is also kept in the
home directory, so a member can start while the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import ConfigError, StoreError
from tlsgate.store.store import NOTIFY_CHANNEL, LearnedException, Revision, Store, is_postgres

log = logging.getLogger("tlsgate.store")


@dataclass(frozen=True, slots=True)
class MemberInfo:
    name: str
    address: str
    version: str


class ConfigFollower:
    def __init__(
        self,
        open_store: Callable[[], Store],
        member: MemberInfo,
        on_config: Callable[[int, TlsgateConfig], None],
        on_learned: Callable[[list[LearnedException]], None],
        *,
        store_url: str | None = None,
        cache_file: Path | None = None,
        poll_interval: float = 0.5,
        listen_poll_interval: float = 2.0,
        heartbeat_interval: float = 2.0,
        backoff_max: float = 10.0,
    ) -> None:
        """``poll_interval``: seconds between polls without LISTEN (SQLite, or LISTEN
        failed); ``listen_poll_interval``: the safety-net poll while NOTIFY wakes us (it
        also refreshes learned exceptions, which are not notified)."""
        self._open = open_store
        self.member = member
        self._on_config = on_config
        self._on_learned = on_learned
        self._url = store_url
        self._cache = cache_file
        self.poll_interval = poll_interval
        self.listen_poll_interval = listen_poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.backoff_max = backoff_max
        self.store: Store | None = None
        self.applied = 0
        self._failed = 0
        self._failed_reason = ""
        self.state = "Pending"
        self.description = "starting"
        self.outage: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listener: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        # asyncio keeps only weak references to tasks: hold the listener's here.
        self._listen_task: asyncio.Task[None] | None = None

    # -- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        """Load the newest revision (or the cached last good one when the store is down
        or the newest cannot be loaded here).

        Raises StoreError when the store is down and nothing is cached, ConfigError when
        the newest revision is refused and nothing is cached (the member row then shows
        Error with the reason until it turns Unreachable).
        """
        try:
            await self._connect()
            await self._sync()
        except StoreError as exc:
            cached = self._read_cache()
            if cached is None:
                raise
            self._enter_outage(exc)
            self._load(cached, from_cache=True)
        if self.applied == 0 and self._failed:
            await self._start_on_cache_after_refusal()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tlsgate-follower")

    async def _start_on_cache_after_refusal(self) -> None:
        failed, reason = self._failed, self._failed_reason
        cached = self._read_cache()
        if cached is not None:
            self._load(cached, from_cache=True)
        if self.applied == 0:
            await self._drop_store()
            raise ConfigError(
                f"configuration revision {failed} cannot be loaded on this member: {reason}",
                fix="fix it on this machine, or apply a corrected revision, then start again",
            )
        # Running the cached revision: still report the refused one.
        self._refuse(failed, reason)
        if self.store is not None:
            await self._beat()

    def start_retrying(self) -> None:
        """Start the loop without a first revision (the caller runs on its own config)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tlsgate-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()
        store = self.store
        if store is not None:
            with contextlib.suppress(StoreError):
                await asyncio.wait_for(
                    asyncio.to_thread(store.remove_member, self.member.name), timeout=5
                )
            await asyncio.to_thread(store.close)

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.5
        next_beat = 0.0
        while True:
            try:
                if self.store is None:
                    await self._connect()
                await self._sync()
                if loop.time() >= next_beat:
                    await self._beat()
                    next_beat = loop.time() + self.heartbeat_interval
                if self.outage is not None:
                    log.warning(
                        "store %s is reachable again; running revision %d",
                        self._where(),
                        self.applied,
                    )
                    self.outage = None
                backoff = 0.5
                poll = self.poll_interval if self._listener is None else self.listen_poll_interval
                # Wake for the next heartbeat too, however long the poll interval is.
                await self._wait(max(0.0, min(poll, next_beat - loop.time())))
            except StoreError as exc:
                self._enter_outage(exc)
                await self._drop_store()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            except Exception:
                # A bug must not end live configuration for the member's lifetime: log it
                # with its traceback (for a bug report), start over on a new connection.
                log.exception("configuration follower failed; retrying in %.1f s", backoff)
                await self._drop_store()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    async def _connect(self) -> None:
        self.store = await asyncio.to_thread(self._open)
        await asyncio.to_thread(
            self.store.register_member, self.member.name, self.member.address, self.member.version
        )
        if is_postgres(self._url):
            await self._listen()

    async def _listen(self) -> None:
        assert self._url is not None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=5
            )
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except (psycopg.Error, OSError) as exc:
            log.info("LISTEN on the store failed (%s); polling instead", exc)
            return
        self._listener = conn
        self._listen_task = asyncio.get_running_loop().create_task(
            self._notifications(conn), name="tlsgate-listen"
        )

    async def _notifications(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        try:
            async for _ in conn.notifies():
                self._wake.set()
        except (psycopg.Error, OSError):
            pass  # the main loop notices the outage through its own queries
        finally:
            if self._listener is conn:
                self._listener = None

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _drop_store(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(store.close)
        await self._close_listener()

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _sync(self) -> None:
        store = self.store
        assert store is not None
        head = await asyncio.to_thread(store.head_number)
        if head != self.applied and head != self._failed:
            rev = await asyncio.to_thread(store.revision, head)
            self._load(rev)
            await self._beat()
        learned = await asyncio.to_thread(store.learned)
        self._on_learned(learned)

    async def _beat(self) -> None:
        store = self.store
        assert store is not None
        beat = (self.member.name, self.applied, self.state, self.description)
        if not await asyncio.to_thread(store.heartbeat, *beat):
            m = self.member
            await asyncio.to_thread(store.register_member, m.name, m.address, m.version)
            await asyncio.to_thread(store.heartbeat, *beat)

    # -- loading ------------------------------------------------------------------------------
    def _load(self, rev: Revision, *, from_cache: bool = False) -> None:
        try:
            config = rev.config()
            self._on_config(rev.number, config)
        except Exception as exc:
            # ConfigError is the expected refusal; anything else raised by the callback is
            # reported the same way (the member keeps its configuration either way).
            if not isinstance(exc, ConfigError):
                log.exception("loading configuration revision %d failed", rev.number)
                exc = ConfigError(f"{type(exc).__name__}: {exc}")
            self._refuse(rev.number, exc.message)
            log.error(
                "configuration revision %d refused: %s; keeping revision %d",
                rev.number,
                exc.message,
                self.applied,
            )
            return
        self.applied = rev.number
        self._failed = 0
        self._failed_reason = ""
        self.state = "Synced"
        self.description = ""
        where = "the cached copy (last good revision)" if from_cache else self._where()
        log.info("running configuration revision %d from %s", rev.number, where)
        if not from_cache:
            self._write_cache(rev)

    def _refuse(self, number: int, reason: str) -> None:
        self._failed, self._failed_reason = number, reason
        self.state = "Error"
        running = f"still running revision {self.applied}" if self.applied else "not serving"
        self.description = f"Revision {number} could not be loaded: {reason}; {running}."

    def _write_cache(self, rev: Revision) -> None:
        if self._cache is None:
            return
        tmp = self._cache.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"number": rev.number, "document": rev.document}))
            tmp.replace(self._cache)
        except OSError as exc:
            log.warning("cannot cache revision %d in %s: %s", rev.number, self._cache, exc)

    def _read_cache(self) -> Revision | None:
        if self._cache is None or not self._cache.exists():
            return None
        try:
            data = json.loads(self._cache.read_text())
            return Revision(int(data["number"]), data["document"], "", _EPOCH, "cached", None)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _enter_outage(self, exc: StoreError) -> None:
        if self.outage is None:
            log.warning(
                "%s; serving on revision %d until the store is back", exc.one_line(), self.applied
            )
        self.outage = exc.message

    def _where(self) -> str:
        return self.store.location if self.store is not None else "the store"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
