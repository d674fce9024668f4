"""The asynchronous log writer: takes records off the hot path and stores them in batches.

The proxy calls :meth:`LogWriter.submit` once per request: an append to a bounded
deque, O(1), never blocking and never raising.  A background task flushes the buffer
at least every ``flush_interval`` seconds (1 s by default), or as soon as a batch is
full, writing each batch to every sink in a worker thread (an ``AsyncLogSink``, the
log daemon's pipe, on the loop itself).

Durability: :meth:`LogWriter.stop` writes everything still buffered before it returns
(graceful shutdown loses nothing while a sink works); a crash loses what was buffered,
at most the last ``flush_interval`` of records.

When a sink is slow or down, batches stay buffered and are retried with exponential
backoff.  The buffer never grows past ``max_buffer`` records: beyond it new records
are dropped and counted (``dropped``), with at most one warning per ``warn_interval``
through :mod:`logging` (logger ``tlsgate.log``).

Must be used from one event loop: ``submit`` is not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from tlsgate.errors import StoreError
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import AnyLogSink

logger = logging.getLogger("tlsgate.log")


@dataclass(frozen=True, slots=True)
class Retention:
    """Delete records older than ``max_age`` and keep at most ``max_rows``."""

    max_age: timedelta | None = timedelta(days=30)
    max_rows: int | None = 10_000_000
    interval: float = 600.0
    """Seconds between two retention runs (the first runs at start)."""


DEFAULT_RETENTION = Retention()


class LogWriter:
    """Buffers records and writes them to ``sinks`` in batches (see module docstring)."""

    def __init__(
        self,
        sinks: Sequence[AnyLogSink],
        *,
        max_buffer: int = 100_000,
        batch_size: int = 2_000,
        flush_interval: float = 1.0,
        retention: Retention | None = DEFAULT_RETENTION,
        warn_interval: float = 60.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        if not sinks:
            raise ValueError("LogWriter needs at least one sink")
        self.sinks = list(sinks)
        self._on_loop = [inspect.iscoroutinefunction(s.write) for s in self.sinks]
        """Per sink: an AsyncLogSink (awaited on the loop) rather than run in a thread."""
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention = retention
        self.warn_interval = warn_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.written = 0
        """Records stored by every sink."""
        self.dropped = 0
        """Records lost: buffer full, or still unwritten when ``stop`` gave up."""
        self._buffer: deque[LogRecord] = deque()
        self._batch: list[LogRecord] = []
        self._done: set[int] = set()  # sinks (by index) that already stored _batch
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._unreported_drops = 0
        self._last_drop_warning = -1e18
        self._last_sink_warning = -1e18

    # -- the hot path ------------------------------------------------------------------
    def submit(self, record: LogRecord) -> None:
        """Queue ``record`` for writing.  O(1); drops and counts when the buffer is full."""
        buf = self._buffer
        if len(buf) + len(self._batch) >= self.max_buffer:
            self.dropped += 1
            self._unreported_drops += 1
            self._maybe_warn_drops()
            return
        buf.append(record)
        if len(buf) == self.batch_size:
            self._wake.set()

    @property
    def buffered(self) -> int:
        """Records accepted but not yet stored by every sink."""
        return len(self._buffer) + len(self._batch)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background flusher (call from inside the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tlsgate-log-writer"
            )

    async def stop(self, timeout: float = 10.0) -> None:
        """Write everything buffered, then close the sinks.

        If the sinks cannot take the records within ``timeout`` seconds, the rest is
        counted as dropped (and a warning logged) so that shutdown cannot hang.
        """
        self._stopping = True
        self._wake.set()
        if self._task is None:
            self.start()
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            lost = self.buffered
            self._buffer.clear()
            self._batch = []
            self.dropped += lost
            logger.warning(
                "web proxy log: %d records dropped at shutdown because the log store "
                "did not take them within %.0f s",
                lost,
                timeout,
            )
        self._report_drops()
        for i, sink in enumerate(self.sinks):
            try:
                await self._call(i, "close")
            except StoreError as exc:
                logger.warning("web proxy log: closing %s: %s", sink.name, exc.one_line())

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted so far is written (or ``timeout`` passes)."""
        if self._task is None:
            self.start()
        target = self.written + self.dropped + self.buffered

        async def wait() -> None:
            while self.written + self.dropped < target:
                self._progress.clear()
                self._wake.set()
                await self._progress.wait()

        await asyncio.wait_for(wait(), timeout)

    async def __aenter__(self) -> LogWriter:
        self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- the background task ---------------------------------------------------------
    async def _run(self) -> None:
        next_prune = time.monotonic()
        backoff = self.backoff_initial
        while True:
            if self.retention is not None and time.monotonic() >= next_prune:
                await self._prune()
                next_prune = time.monotonic() + self.retention.interval
            if not self._batch and self._buffer:
                n = min(self.batch_size, len(self._buffer))
                popleft = self._buffer.popleft
                self._batch = [popleft() for _ in range(n)]
                self._done.clear()
            if self._batch:
                if not await self._write_batch():
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                backoff = self.backoff_initial
                if len(self._buffer) >= self.batch_size or self._stopping:
                    self._progress.set()
                    continue  # a full batch waits (or shutdown): write it now
                # Else sleep like an idle writer: going round at once wrote the few
                # records that came in during the write, a sink call for each handful
                # (measured: +7-10 us of CPU per request on keep-alive).
            self._progress.set()
            self._report_drops_if_due()
            if self._stopping:
                return
            await self._sleep(self.flush_interval)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, woken early by a full batch or by ``stop``."""
        self._wake.clear()
        if self._stopping and not self._batch:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _write_batch(self) -> bool:
        """Write the current batch to every sink that has not stored it yet."""
        for i, sink in enumerate(self.sinks):
            if i in self._done:
                continue
            try:
                await self._call(i, "write", self._batch)
            except StoreError as exc:
                self._warn_sink(sink, exc.one_line())
                return False
            except Exception as exc:  # a sink bug must not kill the writer: report, retry
                self._warn_sink(sink, f"{type(exc).__name__}: {exc}")
                return False
            self._done.add(i)
        self.written += len(self._batch)
        self._batch = []
        self._done.clear()
        return True

    async def _call(self, i: int, method: str, *args: Any) -> None:
        """``sinks[i].method(*args)``: awaited on the loop for an AsyncLogSink, else in a
        worker thread."""
        fn = getattr(self.sinks[i], method)
        if self._on_loop[i]:
            await fn(*args)
        else:
            await asyncio.to_thread(fn, *args)

    async def _prune(self) -> None:
        assert self.retention is not None
        for sink in self.sinks:
            try:
                await asyncio.to_thread(
                    sink.prune, max_age=self.retention.max_age, max_rows=self.retention.max_rows
                )
            except StoreError as exc:
                self._warn_sink(sink, exc.one_line())

    # -- warnings --------------------------------------------------------------------------
    def _warn_sink(self, sink: AnyLogSink, message: str) -> None:
        now = time.monotonic()
        if now - self._last_sink_warning >= self.warn_interval:
            self._last_sink_warning = now
            logger.warning(
                "web proxy log: %s sink failed, records stay buffered and are retried "
                "(%d buffered): %s",
                sink.name,
                self.buffered,
                message,
            )

    def _maybe_warn_drops(self) -> None:
        if time.monotonic() - self._last_drop_warning >= self.warn_interval:
            self._report_drops()

    def _report_drops_if_due(self) -> None:
        if self._unreported_drops:
            self._maybe_warn_drops()

    def _report_drops(self) -> None:
        if not self._unreported_drops:
            return
        self._last_drop_warning = time.monotonic()
        logger.warning(
            "web proxy log: %d records dropped because the log store is slow or down "
            "(buffer limit %d)",
            self._unreported_drops,
            self.max_buffer,
        )
        self._unreported_drops = 0


class DiscardingLogWriter(LogWriter):
    """``[log] enabled = false``: runs as a writer does, records nothing (for
    measurements: the Web Proxy log's cost is tlsgate against this)."""

    def submit(self, record: LogRecord) -> None:
        pass
