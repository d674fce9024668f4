"""The log daemon process: frames in, rows stored; a killed member loses nothing sent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from tlsgate.errors import StoreError
from tlsgate.log.daemon import LogDaemonSink
from tlsgate.log.database import SqliteLogSink
from tlsgate.log.record import LogRecord
from tlsgate.log.writer import LogWriter


def records(n: int, tag: str) -> list[LogRecord]:
    return [
        LogRecord(member="m", client_ip="10.0.0.7", url=f"http://a/{tag}/{i}", status=200)
        for i in range(n)
    ]


def test_batches_are_stored_and_close_waits(tmp_path):
    async def main() -> None:
        sink = LogDaemonSink(tmp_path / "log.db")
        for i in range(5):
            await sink.write(records(1000, f"b{i}"))
        await sink.close()  # waits for the daemon to drain the pipe

    asyncio.run(main())
    db = SqliteLogSink(tmp_path / "log.db")
    assert db.count() == 5000
    db.close()


def test_daemon_restarts_after_it_died(tmp_path):
    async def main() -> None:
        sink = LogDaemonSink(tmp_path / "log.db")
        await sink.write(records(10, "first"))
        proc = sink._proc
        assert proc is not None
        proc.kill()  # "first" may be lost with it: it was the frame in flight
        await asyncio.to_thread(proc.wait, 10)
        # The batch in flight when the daemon died fails with a one-line StoreError and
        # the writer retries it; the next write starts a new daemon.
        for _ in range(2):
            try:
                await sink.write(records(10, "second"))
                break
            except StoreError as exc:
                assert "log daemon" in exc.one_line()
        await sink.write(records(10, "third"))
        await sink.close()

    asyncio.run(main())
    db = SqliteLogSink(tmp_path / "log.db")
    urls = {r.url.split("/")[3] for _, r in db.select("1=1", (), newest_first=False, limit=None)}
    assert {"second", "third"} <= urls
    db.close()


def test_a_writer_on_the_loop_keeps_every_record(tmp_path):
    """Through LogWriter (the member's path): 12,345 records, odd batch sizes, all stored
    once, and the loop stays free while batches are converted."""

    async def main() -> int:
        sink = LogDaemonSink(tmp_path / "log.db")
        writer = LogWriter([sink], batch_size=2_000, flush_interval=0.05)
        writer.start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        t = asyncio.create_task(ticker())
        for i in range(12_345):
            writer.submit(LogRecord(url=f"http://a/w/{i}"))
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await writer.stop()
        t.cancel()
        assert writer.written == 12_345 and writer.dropped == 0
        return ticks

    ticks = asyncio.run(main())
    assert ticks > 10
    db = SqliteLogSink(tmp_path / "log.db")
    assert db.count() == 12_345
    db.close()


def test_member_killed_after_sending_loses_nothing(tmp_path):
    """SIGKILL the writing process: the daemon still stores what was sent."""
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        sys.path.insert(0, {os.path.abspath("src")!r})
        from tlsgate.log.daemon import LogDaemonSink
        from tlsgate.log.record import LogRecord
        async def main():
            sink = LogDaemonSink({str(tmp_path / "log.db")!r})
            await sink.write([LogRecord(url=f"http://a/{{i}}") for i in range(3000)])
            print("sent", flush=True)
            os.kill(os.getpid(), 9)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "sent" in out.stdout and out.returncode == -signal.SIGKILL
    db = SqliteLogSink(tmp_path / "log.db")
    deadline = time.monotonic() + 20
    while db.count() < 3000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.count() == 3000
    db.close()


def test_wire_rows_are_the_rows_the_sink_makes(tmp_path):
    """What the daemon builds from a frame equals what SqliteLogSink builds from the
    record: every field, the time to the microsecond, the index keys."""
    import marshal
    from datetime import UTC, datetime

    from tlsgate.log.database import rows_from_wire, to_wire
    from tlsgate.log.record import values_of

    recs = [
        *records(3, "w"),
        LogRecord(
            time=datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC),
            client_ip="2001:db8::1",
            dest_host="WWW.Example.ORG",
            authenticated=True,
            user="alice",
        ),
        LogRecord(time=datetime(2026, 11, 26, 1, 2, 3, 999999), client_ip="not-an-ip"),
    ]
    db = SqliteLogSink(tmp_path / "log.db")
    wire = marshal.loads(marshal.dumps(to_wire([values_of(r) for r in recs])))
    assert rows_from_wire(wire) == [db._row(r) for r in recs]
    db.close()


def test_batches_of_any_size_are_stored_in_order(tmp_path):
    """Rows go in 100 to an INSERT, the rest one by one: every size keeps every row,
    in order; the rows per statement respect SQLite's parameter limit."""
    from tlsgate.log.database import _INSERT_COLUMNS, rows_per_insert

    assert rows_per_insert(32_766) == 100
    assert rows_per_insert(999) == 999 // len(_INSERT_COLUMNS) == 27  # SQLite before 3.32
    assert rows_per_insert(10) == 1
    db = SqliteLogSink(tmp_path / "log.db")
    sizes = [1, 99, 100, 101, 250, 1000]
    for size in sizes:
        db.write(records(size, f"s{size}"))
    rows = db.select("1=1", (), newest_first=False, limit=None)
    urls = [r.url for _, r in rows]
    assert urls == [f"http://a/s{n}/{i}" for n in sizes for i in range(n)]
    ids = [i for i, _ in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    db.close()
