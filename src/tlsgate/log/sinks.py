"""Where records go: the sink protocol, the W3C file sink, and choosing the log store.

A sink takes batches of records from :class:`~tlsgate.log.writer.LogWriter` in a
worker thread (or, for an :class:`AsyncLogSink`, on the event loop).  It raises
:class:`~tlsgate.errors.StoreError` when it cannot write; the writer keeps the batch
and retries.  The SQL sinks live in :mod:`tlsgate.log.database`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from tlsgate.config.home import Home
from tlsgate.errors import StoreError
from tlsgate.log.database import LogDatabase, PostgresLogSink, SqliteLogSink
from tlsgate.log.formats import to_w3c, w3c_header
from tlsgate.log.record import LogRecord

LOG_DB_NAME = "log.db"


class LogSink(Protocol):
    """What the writer needs from a sink.  Methods run in a worker thread."""

    name: str

    def write(self, records: Sequence[LogRecord]) -> None:
        """Store the whole batch or raise StoreError (then nothing is assumed stored)."""

    def prune(
        self, *, max_age: timedelta | None, max_rows: int | None, now: datetime | None = None
    ) -> int:
        """Apply retention; return how many records (or files) were deleted."""

    def close(self) -> None: ...


class AsyncLogSink(Protocol):
    """A sink whose ``write`` and ``close`` are coroutines, run on the event loop (the
    log daemon's pipe): no worker thread, so no GIL hand-over per batch.  ``prune``
    still runs in a worker thread."""

    name: str

    async def write(self, records: Sequence[LogRecord]) -> None:
        """As :meth:`LogSink.write`; must not block the loop for long."""

    def prune(
        self, *, max_age: timedelta | None, max_rows: int | None, now: datetime | None = None
    ) -> int: ...

    async def close(self) -> None: ...


AnyLogSink = LogSink | AsyncLogSink


class W3CFileSink:
    """W3C extended log files in ``directory``, one per UTC day: ``tlsgate-YYYYMMDD.w3c``.

    A record goes into the file of its own (start) date, so a day's file holds that
    day's requests even when they are flushed after midnight.  A new file starts with
    the ``#Software``/``#Version``/``#Date``/``#Fields`` directives.
    """

    name = "w3c"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_for(self, when: datetime) -> Path:
        return self.directory / f"tlsgate-{when.astimezone(UTC):%Y%m%d}.w3c"

    def write(self, records: Sequence[LogRecord]) -> None:
        by_file: dict[Path, list[str]] = {}
        for r in records:
            by_file.setdefault(self.path_for(r.time), []).append(to_w3c(r))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path, lines in by_file.items():
                with path.open("a", encoding="utf-8", newline="\n") as f:
                    if f.tell() == 0:
                        f.write(w3c_header())
                    f.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise StoreError(
                f"W3C log {self.directory}: cannot write: {exc.strerror or exc}",
                fix="make the log directory writable or free some disk space",
            ) from None

    def prune(
        self, *, max_age: timedelta | None, max_rows: int | None, now: datetime | None = None
    ) -> int:
        """Delete day files older than ``max_age`` (``max_rows`` does not apply to files)."""
        if max_age is None or not self.directory.is_dir():
            return 0
        cutoff = f"tlsgate-{((now or datetime.now(UTC)) - max_age):%Y%m%d}.w3c"
        deleted = 0
        for path in self.directory.glob("tlsgate-????????.w3c"):
            if path.name < cutoff:
                try:
                    path.unlink()
                    deleted += 1
                except OSError:
                    continue  # someone else removed or locked it; try next time
        return deleted

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"W3CFileSink({str(self.directory)!r})"


def is_postgres_url(store_url: str | None) -> bool:
    return bool(store_url) and str(store_url).startswith(("postgresql://", "postgres://"))


def open_log_sink(store_url: str | None, home: Home) -> LogDatabase:
    """The log store that goes with the configuration store.

    PostgreSQL store → the same database (``web_proxy_log`` table); anything else →
    the SQLite file ``HOME/log.db`` (separate from the configuration store's file).
    Opening is lazy: the first write or query connects and creates the schema.
    """
    if store_url is not None and is_postgres_url(store_url):
        return PostgresLogSink(store_url)
    return SqliteLogSink(home.root / LOG_DB_NAME)
