"""The store's commands as an admin runs them (``python -m tlsgate``) against a real
PostgreSQL: two admins applying at once, the store going down and coming back, a
corrupt SQLite file.  No proxy is involved; see test_store_e2e.py for members."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.peers.postgres import PostgresServer
from tlsgate.config.home import Home
from tlsgate.store import ChangeOp, open_store

pytestmark = pytest.mark.timeout(120)


def tlsgate(home: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", *args, "--home", str(home), "--store", store],
        capture_output=True,
        text=True,
        env=dict(os.environ, TLSGATE_USER="admin"),
        timeout=60,
    )


def with_password(dsn: str, password: str) -> str:
    """The server trusts loopback, so a password is accepted and ignored: we check that
    no message ever shows it."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def stage(dsn: str, home: Path, value: str) -> None:
    s = open_store(dsn, Home(home))
    try:
        s.stage([ChangeOp("add", "inspection.source_exceptions", value)], "admin")
    finally:
        s.close()


def one_line_error(r: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert r.returncode == exit_code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("tlsgate: error: ")
    return r.stderr.strip()


def test_two_admins_apply_at_once_one_conflicts(fresh_pg_dsn: str, tmp_path: Path):
    home = tmp_path / "home"
    stage(fresh_pg_dsn, home, "10.0.0.1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tlsgate",
                "apply",
                "--expect-revision",
                "1",
                "-m",
                f"admin {i}",
                "--home",
                str(home),
                "--store",
                fresh_pg_dsn,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TLSGATE_USER=f"admin{i}"),
        )
        for i in range(2)
    ]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    assert sorted(code for code, _ in results) == [0, 4], results
    conflict = next(err for code, err in results if code == 4)
    winner = next(i for i, (code, _) in enumerate(results) if code == 0)
    assert f"revision 2 was applied by admin{winner}@" in conflict and "tlsgate diff" in conflict
    r = tlsgate(home, fresh_pg_dsn, "history", "--limit", "5")
    assert r.returncode == 0 and "initial configuration" in r.stdout
    # exactly one of the two applies made a revision, the winner's
    assert f"admin {winner}" in r.stdout and f"admin {1 - winner}" not in r.stdout


def test_store_down_one_line_errors_and_nothing_lost(
    private_postgres: PostgresServer, tmp_path: Path
):
    home = tmp_path / "home"
    dsn = with_password(private_postgres.dsn, "hunter2")
    assert tlsgate(home, dsn, "history").returncode == 0
    stage(dsn, home, "10.0.0.7")
    private_postgres.stop()
    try:
        for args in (["apply"], ["diff"], ["status"], ["history"]):
            text = one_line_error(tlsgate(home, dsn, *args), 3)
            assert f"store postgresql://postgres:***@127.0.0.1:{private_postgres.port}/" in text
            assert "hunter2" not in text and "PostgreSQL runs" in text
    finally:
        private_postgres.start()
    r = tlsgate(home, dsn, "diff")
    assert r.returncode == 0 and '+source_exceptions = ["10.0.0.7"]' in r.stdout
    r = tlsgate(home, dsn, "apply", "-m", "after the outage")
    assert r.returncode == 0 and "applied revision 2" in r.stdout
    s = open_store(dsn, Home(home))
    try:
        assert s.applied_config().inspection.source_exceptions == ["10.0.0.7"]
        assert s.head().message == "after the outage"
    finally:
        s.close()


def test_corrupt_sqlite_store_is_one_line(tmp_path: Path):
    bad = tmp_path / "tlsgate.db"
    bad.write_bytes(b"not a database at all " * 200)
    text = one_line_error(tlsgate(tmp_path / "home", str(bad), "history"), 3)
    assert str(bad) in text and "not a tlsgate store" in text
