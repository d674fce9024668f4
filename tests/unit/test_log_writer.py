"""The log writer: batches, flushes on stop, buffers while a sink is down, drops and counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsgate.errors import StoreError
from tlsgate.log.database import SqliteLogSink
from tlsgate.log.query import LogQuery, run_query
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import W3CFileSink
from tlsgate.log.writer import DiscardingLogWriter, LogWriter, Retention


def rec(i: int, **kw: object) -> LogRecord:
    return LogRecord(
        client_ip="10.0.0.1",
        dest_host=f"h{i}.example",
        status=200,
        url=f"http://h{i}.example/",
        method="GET",
        **kw,
    )  # type: ignore[arg-type]


class RecordingSink:
    """Test-only sink that keeps batches in memory (to see the batch sizes)."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[list[LogRecord]] = []
        self.closed = False

    def write(self, records: Sequence[LogRecord]) -> None:
        self.batches.append(list(records))

    def prune(
        self, *, max_age: timedelta | None, max_rows: int | None, now: datetime | None = None
    ) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


class BrokenSink(RecordingSink):
    """Test-only sink that fails ``failures`` times, then works."""

    name = "broken"

    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0
        self.exc = exc or StoreError("log store test: disk on fire")

    def write(self, records: Sequence[LogRecord]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.exc
        super().write(records)


def test_records_are_written_in_batches_in_order() -> None:
    sink = RecordingSink()

    async def main() -> None:
        writer = LogWriter([sink], batch_size=1000, flush_interval=60, retention=None)
        writer.start()
        for i in range(4500):
            writer.submit(rec(i))
        await writer.flush(timeout=10)
        assert writer.written == 4500 and writer.buffered == 0
        await writer.stop()

    asyncio.run(main())
    assert max(len(b) for b in sink.batches) <= 1000
    flat = [r for b in sink.batches for r in b]
    assert [r.dest_host for r in flat] == [f"h{i}.example" for i in range(4500)]
    assert sink.closed


def test_a_discarding_writer_runs_and_records_nothing() -> None:
    """``[log] enabled = false``: the writer starts and stops as usual, stores nothing."""
    sink = RecordingSink()

    async def main() -> None:
        writer = DiscardingLogWriter([sink], batch_size=10, flush_interval=0.01)
        writer.start()
        for i in range(50):
            writer.submit(rec(i))
        assert writer.buffered == 0
        await writer.flush(timeout=5)
        await writer.stop()
        assert writer.written == writer.dropped == 0

    asyncio.run(main())
    assert sink.batches == [] and sink.closed


def test_a_partial_batch_is_flushed_within_the_interval() -> None:
    sink = RecordingSink()

    async def main() -> None:
        async with LogWriter([sink], batch_size=1000, flush_interval=0.05) as writer:
            writer.submit(rec(1))
            for _ in range(200):
                if writer.written:
                    break
                await asyncio.sleep(0.02)
            assert writer.written == 1

    asyncio.run(main())


def test_stop_flushes_everything_to_sqlite(tmp_path: Path) -> None:
    db = SqliteLogSink(tmp_path / "log.db")

    async def main() -> None:
        # A long interval: only stop() can write these.
        writer = LogWriter([db], batch_size=500, flush_interval=3600)
        writer.start()
        for i in range(1234):
            writer.submit(rec(i))
        await writer.stop()
        assert writer.written == 1234 and writer.dropped == 0

    asyncio.run(main())
    reader = SqliteLogSink(tmp_path / "log.db")
    assert reader.count() == 1234
    reader.close()


def test_stop_without_start_still_writes(tmp_path: Path) -> None:
    db = SqliteLogSink(tmp_path / "log.db")

    async def main() -> None:
        writer = LogWriter([db])
        writer.submit(rec(1))
        await writer.stop()

    asyncio.run(main())
    assert SqliteLogSink(tmp_path / "log.db").count() == 1


def test_sink_down_buffers_to_the_bound_then_drops_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real SQLite sink whose directory cannot be created: a file sits in the way.
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    db = SqliteLogSink(blocker / "log.db")
    caplog.set_level(logging.WARNING, logger="tlsgate.log")

    async def main() -> None:
        writer = LogWriter(
            [db],
            max_buffer=100,
            batch_size=10,
            flush_interval=0.01,
            backoff_initial=0.01,
            backoff_max=0.05,
            warn_interval=3600,
        )
        writer.start()
        for i in range(250):
            writer.submit(rec(i))
        await asyncio.sleep(0.2)  # several failed attempts
        assert writer.written == 0
        assert writer.buffered == 100
        assert writer.dropped == 150
        # The store comes back: the buffered records are retried and written.
        blocker.unlink()
        blocker.mkdir()
        await writer.flush(timeout=10)
        assert writer.written == 100
        writer.submit(rec(999))
        await writer.stop()
        assert writer.written == 101 and writer.dropped == 150

    asyncio.run(main())
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    # The first drop warns at once; the rest within the interval are reported at stop.
    assert drops == [
        "web proxy log: 1 records dropped because the log store is slow or down (buffer limit 100)",
        "web proxy log: 149 records dropped because the log store is slow or down "
        "(buffer limit 100)",
    ]
    failures = [r.getMessage() for r in caplog.records if "sink failed" in r.getMessage()]
    assert len(failures) == 1 and "cannot open" in failures[0]
    assert SqliteLogSink(blocker / "log.db").count() == 101


def test_drop_warning_reports_each_interval_once(caplog: pytest.LogCaptureFixture) -> None:
    sink = BrokenSink(failures=10**9)
    caplog.set_level(logging.WARNING, logger="tlsgate.log")

    async def main() -> None:
        writer = LogWriter(
            [sink],
            max_buffer=5,
            batch_size=5,
            flush_interval=0.01,
            backoff_initial=0.01,
            backoff_max=0.01,
            warn_interval=3600,
        )
        writer.start()
        for i in range(1000):
            writer.submit(rec(i))
        assert writer.dropped == 995
        await writer.stop(timeout=0.2)
        # stop gave up on the 5 buffered ones: they count as dropped too.
        assert writer.dropped == 1000 and writer.buffered == 0 and writer.written == 0

    asyncio.run(main())
    drops = [r.getMessage() for r in caplog.records if "records dropped because" in r.getMessage()]
    # The first drop warns at once; the other 994 wait for the interval (or stop).
    assert drops[0].startswith("web proxy log: 1 records dropped")
    assert drops[1].startswith("web proxy log: 994 records dropped")
    assert len(drops) == 2
    assert any("5 records dropped at shutdown" in r.getMessage() for r in caplog.records)


def test_a_sink_bug_is_retried_not_fatal() -> None:
    sink = BrokenSink(failures=2, exc=RuntimeError("bug"))

    async def main() -> None:
        writer = LogWriter([sink], flush_interval=0.01, backoff_initial=0.01)
        writer.start()
        writer.submit(rec(1))
        await writer.flush(timeout=10)
        await writer.stop()
        assert writer.written == 1

    asyncio.run(main())
    assert sink.attempts == 3 and len(sink.batches) == 1


def test_several_sinks_each_get_every_record_once(tmp_path: Path) -> None:
    db = SqliteLogSink(tmp_path / "log.db")
    w3c = W3CFileSink(tmp_path / "w3c")
    flaky = BrokenSink(failures=1)
    day1 = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
    day2 = day1 + timedelta(seconds=2)

    async def main() -> None:
        writer = LogWriter(
            [db, w3c, flaky], flush_interval=0.01, backoff_initial=0.01, retention=None
        )
        writer.start()
        writer.submit(rec(1, time=day1))
        writer.submit(rec(2, time=day2))
        await writer.stop()

    asyncio.run(main())
    # The flaky sink failed once; the others must not have stored the batch twice.
    assert db.count() == 2
    assert sum(len(b) for b in flaky.batches) == 2
    files = sorted(p.name for p in (tmp_path / "w3c").iterdir())
    assert files == ["tlsgate-20261124.w3c", "tlsgate-20261125.w3c"]
    text = (tmp_path / "w3c" / "tlsgate-20261124.w3c").read_text()
    assert text.startswith("#Software: tlsgate")
    assert "#Fields: c-ip" in text
    assert text.count("h1.example") == 2 and "h2.example" not in text  # r-host and cs-uri


def test_w3c_file_appends_without_a_second_header(tmp_path: Path) -> None:
    sink = W3CFileSink(tmp_path)
    t = datetime(2026, 11, 25, 8, tzinfo=UTC)
    sink.write([rec(1, time=t)])
    sink.write([rec(2, time=t)])
    text = (tmp_path / "tlsgate-20261125.w3c").read_text()
    assert text.count("#Fields:") == 1
    assert len([line for line in text.splitlines() if not line.startswith("#")]) == 2


def test_w3c_sink_retention_deletes_old_day_files(tmp_path: Path) -> None:
    sink = W3CFileSink(tmp_path)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    for days in (0, 1, 30, 31, 40):
        sink.write([rec(days, time=now - timedelta(days=days))])
    assert sink.prune(max_age=timedelta(days=30), max_rows=None, now=now) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tlsgate-20261026.w3c",
        "tlsgate-20261124.w3c",
        "tlsgate-20261125.w3c",
    ]


def test_w3c_sink_unwritable_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"W3C log .*cannot write"):
        W3CFileSink(tmp_path / "file").write([rec(1)])


def test_writer_applies_retention_at_start(tmp_path: Path) -> None:
    db = SqliteLogSink(tmp_path / "log.db")
    now = datetime.now(UTC)
    db.write([rec(1, time=now - timedelta(days=40)), rec(2, time=now - timedelta(days=1))])

    async def main() -> None:
        writer = LogWriter([db], retention=Retention(max_age=timedelta(days=30), max_rows=None))
        writer.start()
        await writer.flush(timeout=10)
        await writer.stop()

    asyncio.run(main())
    left = run_query(SqliteLogSink(tmp_path / "log.db"), LogQuery())
    assert [r.dest_host for r in left] == ["h2.example"]
