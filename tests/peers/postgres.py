"""A real, throwaway PostgreSQL server on 127.0.0.1 for tests.

``PostgresServer`` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<v>/bin``)
on a cluster made with ``initdb`` in its own temporary directory:

* the directory belongs to the unprivileged ``postgres`` user, because PostgreSQL
  refuses to run as root; when we are root every command runs through
  ``runuser -u postgres --``;
* it listens on 127.0.0.1 only, on a free port chosen at construction, with its unix
  socket inside the temporary directory (never ``/var/run/postgresql``);
* authentication is ``trust`` (loopback only), superuser ``postgres``;
* durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``)
  because test data is thrown away;
* a database ``tlsgate`` exists after ``start()``.

``stop()`` / ``start()`` keep the data directory and the port, so a test can simulate
an outage and a recovery. ``cleanup()`` stops the server and deletes everything.

Override the binary directory with ``TLSGATE_TEST_PG_BINDIR`` if needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from .ports import free_port, wait_for_port

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEFAULT_DATABASE = "tlsgate"


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries (highest installed major version)."""
    override = os.environ.get("TLSGATE_TEST_PG_BINDIR")
    if override:
        return Path(override)
    candidates = []
    for pg_ctl in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"):
        try:
            candidates.append((int(pg_ctl.parent.parent.name), pg_ctl.parent))
        except ValueError:
            continue
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: "
            "install them with `apt-get install postgresql` (scripts/test.sh does this)"
        )
    return max(candidates)[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, driven with ``pg_ctl``."""

    def __init__(self, port: int | None = None, database: str = DEFAULT_DATABASE) -> None:
        self.bindir = find_bindir()
        self.port = port if port is not None else free_port(HOST)
        self.database = database
        # Not under pytest's basetemp: that is 0700 root, which the postgres user
        # cannot traverse. /tmp itself is world-searchable.
        self.base = Path(tempfile.mkdtemp(prefix="tlsgate-pg-"))
        self.datadir = self.base / "data"
        self.socketdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self._as_root = os.geteuid() == 0
        self._initialised = False
        self._running = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (initialising the cluster the first time) and wait for it."""
        if self._running:
            return
        if not self._initialised:
            self._initdb()
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
            ],
            what="pg_ctl start",
        )
        self._running = True
        wait_for_port(HOST, self.port)
        self._ensure_database(self.database)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; the data directory and port stay for a later ``start()``."""
        if not self._running:
            return
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                mode,
                "-D",
                str(self.datadir),
            ],
            what="pg_ctl stop",
        )
        self._running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        try:
            if self._running:
                self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._running

    # -- addresses -------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq URL of the default database, e.g. ``postgresql://postgres@127.0.0.1:5/tlsgate``."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    # -- databases -------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database (``test_<random>`` unless named) and return its DSN."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._admin_sql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends sessions a test left open.
        self._admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _ensure_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')

    def _admin_sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    # -- internals -------------------------------------------------------------------

    def _initdb(self) -> None:
        self.socketdir.mkdir()
        if self._as_root:
            shutil.chown(self.base, SUPERUSER, SUPERUSER)
            shutil.chown(self.socketdir, SUPERUSER, SUPERUSER)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            what="initdb",
        )
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socketdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "log_min_messages": "warning",
        }
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tlsgate test settings\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self._initialised = True

    def _run(self, argv: Sequence[str], *, what: str) -> None:
        if self._as_root:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        result = subprocess.run(
            list(argv),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            log = ""
            if self.logfile.exists():
                log = self.logfile.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"--- server log ---\n{log}"
            )

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, base={self.base}, running={self._running})"
