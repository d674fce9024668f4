"""The log daemon process: frames in, rows stored; a killed member loses nothing sent."""

from __future__ import annotations

import asyncio
import contextlib
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

    from tlsgate.log.database import rows_from_wire
    from tlsgate.log.record import to_wire

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
    wire = marshal.loads(marshal.dumps(to_wire(recs)))
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


def feed(fd: int, recs: list[LogRecord]) -> None:
    """One frame as the member writes it."""
    import marshal

    from tlsgate.log.daemon import _FRAME
    from tlsgate.log.record import to_wire

    payload = marshal.dumps(to_wire(recs))
    os.write(fd, _FRAME.pack(len(payload), len(recs)) + payload)


def serving(path, **limits):
    """The daemon's loop in a thread, reading a pipe; returns (write end, thread)."""
    import threading

    from tlsgate.log.daemon import serve

    r, w = os.pipe()

    def run() -> None:
        try:
            serve(path, r, **limits)
        finally:
            os.close(r)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return w, t


def indexed(path) -> int:
    """Rows in the indexed table, read without indexing the spool."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM web_proxy_log").fetchone()[0])


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_frames_wait_in_the_spool_while_the_member_is_busy(tmp_path):
    """Frames coming faster than ``idle`` stay in the spool, unindexed; once they stop,
    the daemon indexes them all, in order, exactly once."""
    path = tmp_path / "log.db"
    w, t = serving(path, idle=1.0, bound=1_000_000)
    peek = SqliteLogSink(path)  # spooled() does not index; select() would
    for i in range(8):
        feed(w, records(500, f"f{i}"))
        time.sleep(0.1)
    assert wait_for(lambda: peek.spooled() == 4000)
    assert wait_for(lambda: peek.spooled() == 0)  # idle: indexed
    os.close(w)
    t.join(10)
    rows = peek.select("1=1", (), newest_first=False, limit=None)
    assert [r.url for _, r in rows] == [f"http://a/f{i}/{j}" for i in range(8) for j in range(500)]
    peek.close()


def test_past_the_bound_the_daemon_indexes_while_busy(tmp_path):
    path = tmp_path / "log.db"
    w, t = serving(path, idle=60.0, bound=1500, chunk=1000)
    peek = SqliteLogSink(path)
    for i in range(4):
        feed(w, records(1000, f"b{i}"))
    # Never idle for 60 s, yet the spool is brought back to the bound.
    assert wait_for(lambda: 0 < peek.spooled() <= 1500 and indexed(path) >= 2500)
    os.close(w)
    t.join(10)
    assert peek.count() == 4000
    peek.close()


def test_a_query_sees_records_not_yet_indexed(tmp_path):
    """A query indexes the spool first: nothing spooled is missed, filters are SQL's."""
    path = tmp_path / "log.db"
    w, t = serving(path, idle=60.0, bound=1_000_000)
    peek = SqliteLogSink(path)
    feed(w, [*records(300, "q"), LogRecord(client_ip="192.0.2.9", status=403, url="http://x/")])
    assert wait_for(lambda: peek.spooled() == 301)
    from tlsgate.log.query import LogQuery, parse_source, run_query

    hits = run_query(peek, LogQuery(status=(403,), source=parse_source("192.0.2.0/24")))
    assert [r.url for r in hits] == ["http://x/"]
    assert peek.spooled() == 0 and peek.count() == 301
    os.close(w)
    t.join(10)
    peek.close()


def test_the_spool_is_indexed_exactly_once_by_racing_readers(tmp_path):
    """Several processes may index at once (the daemon, ``tlsgate log``, the console):
    each frame moves in one transaction, so no record is lost or doubled."""
    import threading

    path = tmp_path / "log.db"
    writer = SqliteLogSink(path)
    import marshal

    from tlsgate.log.record import to_wire

    for i in range(20):
        writer.spool(marshal.dumps(to_wire(records(200, f"r{i}"))), 200)
    sinks = [SqliteLogSink(path) for _ in range(4)]
    moved: list[int] = []
    threads = [threading.Thread(target=lambda s=s: moved.append(s.index_spool(500))) for s in sinks]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert writer.count() == 4000 and sum(moved) <= 4000
    urls = [r.url for _, r in writer.select("1=1", (), newest_first=False, limit=None)]
    assert urls == [f"http://a/r{i}/{j}" for i in range(20) for j in range(200)]
    for s in (writer, *sinks):
        s.close()


def test_an_unreadable_batch_is_set_aside_and_the_log_goes_on(tmp_path, caplog):
    import marshal

    from tlsgate.log.record import to_wire

    db = SqliteLogSink(tmp_path / "log.db")
    db.spool(marshal.dumps(to_wire(records(2, "before"))), 2)
    db.spool(b"not a frame", 3)
    db.spool(marshal.dumps(([("short",)], [0])), 1)  # decodes, but not as rows
    db.spool(marshal.dumps(to_wire(records(2, "after"))), 2)
    assert db.count() == 4 and db.spooled() == 0
    urls = [r.url for _, r in db.select("1=1", (), newest_first=False, limit=None)]
    assert urls == [f"http://a/{tag}/{i}" for tag in ("before", "after") for i in range(2)]
    kept = db.execute_select("SELECT seq, records FROM web_proxy_log_spool_unreadable", ())
    assert kept == [(2, 3), (3, 1)]
    assert "spooled batch 2 (3 records) cannot be read" in caplog.text
    db.close()


def test_an_indexing_failure_backs_off_and_clears(tmp_path, capsys):
    """A failed chunk (say, a long query holding the write lock) is tried again later,
    0.1 s then doubling; frames go on being spooled meanwhile (the loop only waits for
    them); a success resets the delay."""
    from tlsgate.log.daemon import _Indexer

    class Flaky(SqliteLogSink):
        fail = 2

        def index_spool(self, max_records=None):
            if self.fail:
                self.fail -= 1
                raise StoreError("log store x: cannot index the log's spool: database is locked")
            return super().index_spool(max_records)

    sink = Flaky(tmp_path / "log.db")
    indexer = _Indexer(sink, 1000)
    indexer.run()
    assert 0 < indexer.pause() <= 0.1 and indexer.backoff.delay == 0.2
    indexer.run()
    assert indexer.backoff.delay == 0.4
    assert "database is locked; indexing again in 0.2 s" in capsys.readouterr().err
    indexer.run()
    assert indexer.pause() == 0 and indexer.backoff.delay == 0.1
    sink.close()
