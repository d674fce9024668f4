"""The two databases behind the store, with one schema and one set of SQL statements.

SQL is written once with ``?`` placeholders; the PostgreSQL backend converts them.  Each
backend maps its driver's errors into :class:`StoreError` naming the store and the
cause, so no sqlite3 or psycopg exception leaves this module.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tlsgate.errors import StoreError
from tlsgate.sqlite import connect_wal

Row = tuple[Any, ...]

# Numbered migrations; each is a list of statements per dialect ("id" differs).
MIGRATIONS: list[dict[str, list[str]]] = [
    {
        "common": [
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE revisions (number INTEGER PRIMARY KEY, document TEXT NOT NULL, "
            "author TEXT NOT NULL, created_at TEXT NOT NULL, message TEXT NOT NULL, "
            "parent INTEGER)",
            "CREATE TABLE members (name TEXT PRIMARY KEY, address TEXT NOT NULL, "
            "version TEXT NOT NULL, applied_revision INTEGER NOT NULL, state TEXT NOT NULL, "
            "description TEXT NOT NULL, heartbeat_at TEXT NOT NULL, started_at TEXT NOT NULL)",
            "CREATE TABLE learned_exceptions (host TEXT NOT NULL, port INTEGER NOT NULL, "
            "reason TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, "
            "hits INTEGER NOT NULL, expires_at TEXT NOT NULL, PRIMARY KEY (host, port))",
            "INSERT INTO meta (key, value) VALUES ('head', '0')",
        ],
        "sqlite": [
            "CREATE TABLE staged_ops (id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, "
            "path TEXT NOT NULL, value TEXT NOT NULL, author TEXT NOT NULL, "
            "created_at TEXT NOT NULL)",
        ],
        "postgresql": [
            "CREATE TABLE staged_ops (id BIGSERIAL PRIMARY KEY, op TEXT NOT NULL, "
            "path TEXT NOT NULL, value TEXT NOT NULL, author TEXT NOT NULL, "
            "created_at TEXT NOT NULL)",
        ],
    },
    # 2: the admin console's users (argon2id hashes) and API tokens (SHA-256 hashes),
    # shared by every member of the store.  Names are unique per kind, ignoring case.
    {
        "common": [
            "CREATE TABLE admin_credentials (kind TEXT NOT NULL "
            "CHECK (kind IN ('user', 'token')), name TEXT NOT NULL, "
            "secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (kind, name))",
            "CREATE UNIQUE INDEX admin_credentials_name ON admin_credentials (kind, lower(name))",
            "CREATE INDEX admin_credentials_secret ON admin_credentials (secret_hash)",
        ],
        "sqlite": [],
        "postgresql": [],
    },
]
SCHEMA_VERSION = len(MIGRATIONS)
WRITER_LOCK = 7262746167
"""PostgreSQL advisory lock key held by every write transaction on the store."""


def redact(url: str) -> str:
    """A DSN without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Backend:
    """One connection to the store's database, used under a lock (thread-safe)."""

    dialect = ""
    location = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- provided by each dialect ------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    def _begin(self, write: bool) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _error(self, action: str, exc: Exception) -> StoreError:
        raise NotImplementedError

    def notify(self, channel: str, payload: str) -> None:
        """Tell listening members (PostgreSQL); SQLite members poll instead."""

    def close(self) -> None:
        raise NotImplementedError

    def data_version(self) -> int:
        """A number that changes when another connection commits (SQLite), else 0."""
        return 0

    # -- shared -------------------------------------------------------------------------
    @contextmanager
    def transaction(self, action: str, *, write: bool = True) -> Iterator[Backend]:
        """A transaction; ``write`` holds the store-wide writer lock (serialises writers).

        A read transaction takes no lock and sees one snapshot, so ``tlsgate status`` and
        the members' polls never wait behind an apply (nor need write access to SQLite).
        """
        with self._lock:
            try:
                self._connect()
                self._begin(write)
            except (sqlite3.Error, psycopg.Error, OSError) as exc:
                raise self._error(action, exc) from None
            try:
                yield self
                self._commit()
            except BaseException as exc:
                with suppress(sqlite3.Error, psycopg.Error):
                    self._rollback()
                if isinstance(exc, sqlite3.Error | psycopg.Error | OSError):
                    raise self._error(action, exc) from None
                raise

    def query(self, sql: str, params: Sequence[Any] = (), *, action: str = "read") -> list[Row]:
        """A statement inside :meth:`transaction`, or on its own (autocommitted)."""
        with self._lock:
            try:
                self._connect()
                return self._execute(sql, params)
            except (sqlite3.Error, psycopg.Error, OSError) as exc:
                raise self._error(action, exc) from None

    def read(self, sql: str, params: Sequence[Any] = (), *, action: str = "read") -> list[Row]:
        """A read outside any transaction: its own short read-only transaction."""
        with self.transaction(action, write=False):
            return self.query(sql, params, action=action)

    def migrate(self) -> None:
        with self.transaction("prepare the schema"):
            self.query(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            rows = self.query("SELECT MAX(version) FROM schema_migrations")
            current = int(rows[0][0] or 0)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.location} has schema version {current}, newer than this "
                    f"tlsgate ({SCHEMA_VERSION})",
                    fix="upgrade tlsgate on this machine",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                step = MIGRATIONS[version - 1]
                for sql in step["common"] + step[self.dialect]:
                    self.query(sql)
                self.query(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, "migrated"),
                )


class SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 15.0) -> None:
        super().__init__()
        self.path = path
        self.busy_timeout = busy_timeout
        self.location = str(path)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> None:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # FULL: an applied revision survives a crash.
            self._conn = connect_wal(self.path, timeout=self.busy_timeout, synchronous="FULL")

    def _execute(self, sql: str, params: Sequence[Any]) -> list[Row]:
        assert self._conn is not None
        return self._conn.execute(sql, tuple(params)).fetchall()

    def _begin(self, write: bool) -> None:
        assert self._conn is not None
        # IMMEDIATE takes the write lock up front, so two applies cannot both read the
        # same head; a deferred read sees one WAL snapshot and blocks nobody.
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")

    def _commit(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def data_version(self) -> int:
        rows = self.query("PRAGMA data_version")
        return int(rows[0][0])

    def _error(self, action: str, exc: Exception) -> StoreError:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, sqlite3.OperationalError) and "locked" in detail:
            fix = "another tlsgate command holds the store; try again"
        elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in detail:
            fix = f"{self.path} is not a tlsgate store; move it away or choose --store"
        else:
            fix = f"check that {self.path} is a writable file on a local disk"
        return StoreError(f"store {self.location}: cannot {action}: {detail}", fix=fix)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresBackend(Backend):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.location = redact(url)
        self._conn: psycopg.Connection[Row] | None = None

    def _connect(self) -> None:
        if self._conn is not None and self._conn.closed:
            self._conn = None
        if self._conn is None:
            self._conn = psycopg.connect(self.url, connect_timeout=5, autocommit=True)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[Row]:
        assert self._conn is not None
        cur = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return cur.fetchall() if cur.description is not None else []

    def _begin(self, write: bool) -> None:
        assert self._conn is not None
        if not write:
            # One snapshot for the whole read (head and staged operations agree).
            self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return
        self._conn.execute("BEGIN")
        # One lock serialises writers, as SQLite's BEGIN IMMEDIATE does.  An advisory
        # transaction lock rather than SELECT ... FOR UPDATE on a meta row: it also
        # serialises the first migration, before any table exists.
        self._conn.execute(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    def _commit(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.execute("ROLLBACK")

    def notify(self, channel: str, payload: str) -> None:
        self.query("SELECT pg_notify(?, ?)", (channel, payload), action="notify members")

    def _error(self, action: str, exc: Exception) -> StoreError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None  # reconnect next time
        if isinstance(exc, psycopg.OperationalError):
            fix = "check that PostgreSQL runs and accepts connections from this machine"
        else:
            fix = "check the store URL and the database's permissions"
        return StoreError(f"store {self.location}: cannot {action}: {detail}", fix=fix)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
