"""Members following the store, beyond the basics: woken by NOTIFY rather than polling,
a failing member keeps following, heartbeats keep coming while nothing changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsgate.config.home import Home
from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import ConfigError
from tlsgate.store import ChangeOp, LearnedException, MemberStatus, open_store
from tlsgate.store.follower import ConfigFollower, MemberInfo

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    dsn: str = request.getfixturevalue("fresh_pg_dsn")
    return dsn


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


class Member:
    """Receives revisions like the proxy runtime; ``broken`` revisions raise a bug."""

    def __init__(self, broken: set[int] | None = None) -> None:
        self.revisions: list[int] = []
        self.sources: list[str] = []
        self.broken = broken or set()

    def on_config(self, number: int, config: TlsgateConfig) -> None:
        if number in self.broken:
            raise RuntimeError("policy compiler crashed")
        self.revisions.append(number)
        self.sources = config.inspection.source_exceptions

    def on_learned(self, entries: list[LearnedException]) -> None:
        pass


async def until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll for a condition with a generous deadline (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def apply_source(url: str, home: Home, value: str) -> int:
    s = open_store(url, home)
    try:
        s.stage([ChangeOp("add", "inspection.source_exceptions", value)], "admin")
        return s.apply(value, "admin").number
    finally:
        s.close()


def member_row(url: str, home: Home, name: str) -> MemberStatus | None:
    s = open_store(url, home)
    try:
        return next((m for m in s.members() if m.name == name), None)
    finally:
        s.close()


def test_postgres_member_is_woken_by_notify(fresh_pg_dsn: str, home: Home):
    """Polls are an hour apart, so only NOTIFY can deliver the revision in time."""
    m = Member()

    async def run() -> None:
        f = ConfigFollower(
            lambda: open_store(fresh_pg_dsn, home),
            MemberInfo("m1", "127.0.0.1:8080", "test"),
            m.on_config,
            m.on_learned,
            store_url=fresh_pg_dsn,
            poll_interval=3600,
            listen_poll_interval=3600,
            heartbeat_interval=3600,
        )
        await f.start()
        try:
            for value in ("10.0.0.1", "10.0.0.2"):
                n = await asyncio.to_thread(apply_source, fresh_pg_dsn, home, value)
                await until(lambda n=n: m.revisions[-1] == n)
            assert m.sources == ["10.0.0.1", "10.0.0.2"]
        finally:
            await f.stop()

    asyncio.run(run())


def test_a_member_bug_is_reported_as_error_and_following_continues(url: str, home: Home):
    m = Member(broken={2})

    async def run() -> None:
        f = ConfigFollower(
            lambda: open_store(url, home),
            MemberInfo("m1", "127.0.0.1:8080", "test"),
            m.on_config,
            m.on_learned,
            store_url=url,
            poll_interval=0.1,
            heartbeat_interval=0.2,
        )
        await f.start()
        try:
            await asyncio.to_thread(apply_source, url, home, "10.0.0.1")
            await until(lambda: getattr(member_row(url, home, "m1"), "state", "") == "Error")
            row = member_row(url, home, "m1")
            assert row is not None and row.applied_revision == 1
            assert "Revision 2 could not be loaded: RuntimeError: policy compiler crashed" in (
                row.description
            )
            assert m.revisions == [1] and m.sources == []
            n = await asyncio.to_thread(apply_source, url, home, "10.0.0.2")
            await until(lambda: m.revisions[-1] == n)
            await until(lambda: getattr(member_row(url, home, "m1"), "state", "") == "Synced")
            assert m.sources == ["10.0.0.1", "10.0.0.2"]
        finally:
            await f.stop()

    asyncio.run(run())


def test_heartbeats_continue_while_nothing_changes(url: str, home: Home):
    """A member with long polls still heartbeats, so it never turns Unreachable."""
    m = Member()

    async def run() -> None:
        f = ConfigFollower(
            lambda: open_store(url, home),
            MemberInfo("m1", "127.0.0.1:8080", "test"),
            m.on_config,
            m.on_learned,
            store_url=url,
            poll_interval=3600,
            listen_poll_interval=3600,
            heartbeat_interval=0.1,
        )
        await f.start()
        try:
            first = member_row(url, home, "m1")
            assert first is not None
            await until(
                lambda: (
                    getattr(member_row(url, home, "m1"), "heartbeat_at", first.heartbeat_at)
                    > first.heartbeat_at
                )
            )
        finally:
            await f.stop()
        assert member_row(url, home, "m1") is None  # a stopped member leaves the list

    asyncio.run(run())


def _follower(url: str, home: Home, m: Member) -> ConfigFollower:
    return ConfigFollower(
        lambda: open_store(url, home),
        MemberInfo("m1", "127.0.0.1:8080", "test"),
        m.on_config,
        m.on_learned,
        store_url=url,
        cache_file=home.root / "applied-revision.json",
        poll_interval=0.1,
        heartbeat_interval=0.2,
    )


def test_a_refused_newest_revision_at_start(url: str, home: Home):
    """Start on the cached last good revision and report Error; with nothing cached,
    refuse to start with the reason (and leave the Error visible in status)."""

    async def first_run() -> None:
        f = _follower(url, home, Member())
        await f.start()
        await asyncio.to_thread(apply_source, url, home, "10.0.0.1")  # revision 2
        await until(lambda: f.applied == 2)
        await f.stop()

    asyncio.run(first_run())
    apply_source(url, home, "10.0.0.2")  # revision 3, which this machine cannot load

    m = Member(broken={3})

    async def restart() -> None:
        f = _follower(url, home, m)
        await f.start()
        try:
            assert m.revisions == [2] and m.sources == ["10.0.0.1"]
            row = member_row(url, home, "m1")
            assert row is not None and row.state == "Error"
            assert row.description == (
                "Revision 3 could not be loaded: RuntimeError: policy compiler crashed; "
                "still running revision 2."
            )
        finally:
            await f.stop()

    asyncio.run(restart())

    (home.root / "applied-revision.json").unlink()

    async def nothing_cached() -> None:
        f = _follower(url, home, Member(broken={3}))
        with pytest.raises(ConfigError) as err:
            await f.start()
        assert "configuration revision 3 cannot be loaded on this member" in err.value.message
        assert "policy compiler crashed" in err.value.message

    asyncio.run(nothing_cached())
    row = member_row(url, home, "m1")
    assert row is not None and row.state == "Error" and "not serving" in row.description


def test_a_member_whose_row_was_removed_registers_again(url: str, home: Home):
    m = Member()

    async def run() -> None:
        f = _follower(url, home, m)
        await f.start()
        try:
            s = open_store(url, home)
            try:
                assert s.remove_member("m1")  # e.g. a stopped member of the same name
                assert not s.heartbeat("m1", 1, "Synced", "")
            finally:
                s.close()
            await until(lambda: member_row(url, home, "m1") is not None)
            row = member_row(url, home, "m1")
            assert row is not None and row.address == "127.0.0.1:8080"
            await until(lambda: getattr(member_row(url, home, "m1"), "state", "") == "Synced")
        finally:
            await f.stop()

    asyncio.run(run())
