"""Shared pytest fixtures: real peers (PostgreSQL, nginx, a test PKI) and a tlsgate home.

Session-scoped peers start once per test run and are stopped at the end, whatever
happens. Tests under ``tests/e2e/`` are marked ``e2e`` automatically, so
``pytest -m 'not e2e'`` runs the fast unit tests alone. See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.peers.postgres import PostgresServer

_E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (database ``tlsgate``); ``.dsn`` is its URL.

    Tests may ``stop()`` and ``start()`` it to simulate an outage; the ``fresh_pg_dsn``
    fixture restarts it afterwards if a test left it down.
    """
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """DSN of a new, empty database (``test_<random>``) dropped after the test."""
    dsn = postgres.create_database()
    yield dsn
    if not postgres.running:
        postgres.start()
    postgres.drop_database(urlsplit(dsn).path.lstrip("/"))


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own (about 2 s to start), for destructive tests."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# -- tlsgate ---------------------------------------------------------------------------


@pytest.fixture
def tlsgate_home(tmp_path: Path) -> Path:
    """An empty directory to use as TLSGATE home (``--home``) for one test."""
    home = tmp_path / "tlsgate-home"
    home.mkdir()
    return home
