"""Two processes opening the same new SQLite file at once (the proxy's log daemon and
``tlsgate log``; a member and ``tlsgate status``) both get it, in WAL mode.

SQLite answers "database is locked" at once, without its busy handler, to the loser of
two concurrent switches to WAL; before :func:`tlsgate.sqlite.connect_wal` about one race
in five failed that way.  Real files, real threads, no fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsgate.log.database import SqliteLogSink
from tlsgate.sqlite import connect_wal
from tlsgate.store.backend import SqliteBackend

RACES = 60


def open_log(path: Path) -> str:
    sink = SqliteLogSink(path)
    try:
        sink.open()
        return str(sink.spooled())
    finally:
        sink.close()


def open_store(path: Path) -> str:
    backend = SqliteBackend(path)
    try:
        return str(backend.query("PRAGMA journal_mode")[0][0])
    finally:
        backend.close()


def race(opener: Callable[[Path], str], path: Path) -> list[str]:
    """Run ``opener`` on ``path`` from two threads released together; each result or
    the error it raised."""
    start = threading.Barrier(2)
    results: list[str] = []

    def run() -> None:
        start.wait()
        try:
            results.append(opener(path))
        except Exception as exc:  # the failure the test looks for, reported below
            results.append(f"error: {exc}")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize(
    ("opener", "expected"), [(open_log, "0"), (open_store, "wal")], ids=["log", "store"]
)
def test_two_openers_of_a_new_file_both_succeed(tmp_path, opener, expected):
    for i in range(RACES):
        results = race(opener, tmp_path / f"{i}.db")
        assert results == [expected, expected], f"race {i}"


def test_connect_wal_gives_wal_and_the_asked_synchronous(tmp_path):
    conn = connect_wal(tmp_path / "a.db", timeout=1.0, synchronous="FULL")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_a_file_that_is_not_a_database_is_not_retried(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database file, but text" * 100)
    with pytest.raises(Exception, match="not a database"):
        connect_wal(path, timeout=30.0, synchronous="FULL")
