"""Opening an SQLite database file in WAL mode, safely against a concurrent opener.

The configuration store and the log store are SQLite files that several processes open
at once: the proxy, its log daemon, ``tlsgate log``, ``tlsgate status``, the console.
SQLite does not call the busy handler for ``PRAGMA journal_mode=WAL``: when two
connections switch a new file to WAL at the same moment, the loser gets "database is
locked" at once, whatever the timeout (measured: 213 of 1,000 races of two threads
opening a fresh file).  :func:`connect_wal` retries that one statement until the
timeout, as the busy handler would; every later statement has the busy handler.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_RETRY_PAUSE = 0.005  # seconds between attempts; the other opener needs ~1 ms


def connect_wal(path: Path, *, timeout: float, synchronous: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``timeout`` seconds of busy waiting,
    in autocommit mode, usable from any thread (callers serialize it themselves)."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_RETRY_PAUSE)
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn
