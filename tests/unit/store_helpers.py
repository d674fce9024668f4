"""Fixtures and helpers for the store tests; import them explicitly into a test module.

Fixture functions are named ``*_fixture`` (the fixture names are ``url``, ``clock``,
``home``, ``store``) so importing them does not clash with test parameters.

``url`` is parametrised over both backends (a SQLite file and a fresh PostgreSQL
database), so every test that uses ``store`` runs twice.  ``clock`` is the store's
injected clock: tests move time on instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsgate.config.home import Home
from tlsgate.store import ChangeOp, Store, open_store


class Clock:
    """A settable clock for :class:`Store` (``now=clock``)."""

    def __init__(self) -> None:
        self.t = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture(name="url", params=["sqlite", "postgresql"])
def url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    dsn: str = request.getfixturevalue("fresh_pg_dsn")
    return dsn


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()


@pytest.fixture(name="home")
def home_fixture(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture(name="store")
def store_fixture(url: str, home: Home, clock: Clock) -> Iterator[Store]:
    s = open_store(url, home, now=clock)
    yield s
    s.close()


def add_source(value: str) -> ChangeOp:
    return ChangeOp("add", "inspection.source_exceptions", value)


def remove_source(value: str) -> ChangeOp:
    return ChangeOp("remove", "inspection.source_exceptions", value)


def applied_sources(store: Store) -> list[str]:
    return store.applied_config().inspection.source_exceptions


__all__ = [
    "Clock",
    "add_source",
    "applied_sources",
    "clock_fixture",
    "home_fixture",
    "remove_source",
    "store_fixture",
    "url_fixture",
]
