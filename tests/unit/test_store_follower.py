"""Members following the store: live revisions, refused revisions, outages (real databases)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tlsgate.config.home import Home
from tlsgate.config.model import TlsgateConfig
from tlsgate.errors import ConfigError, StoreError
from tlsgate.store import ChangeOp, open_store
from tlsgate.store.follower import ConfigFollower, MemberInfo


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("fresh_pg_dsn")


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


class Member:
    """Collects what the follower hands over, like the proxy's runtime does."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.revisions: list[int] = []
        self.refuse = refuse or set()
        self.learned: list[str] = []

    def on_config(self, number: int, config: TlsgateConfig) -> None:
        if number in self.refuse:
            raise ConfigError(f"cannot load revision {number}: upstream CA file missing")
        self.revisions.append(number)

    def on_learned(self, entries) -> None:
        self.learned = [f"{e.host}:{e.port}" for e in entries]


def follower(url: str, home: Home, member: Member, name: str = "m1") -> ConfigFollower:
    return ConfigFollower(
        lambda: open_store(url, home),
        MemberInfo(name, "127.0.0.1:8080", "test"),
        member.on_config,
        member.on_learned,
        store_url=url,
        cache_file=home.root / f"{name}-applied.json",
        poll_interval=0.1,
        heartbeat_interval=0.2,
        backoff_max=0.5,
    )


async def until(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def stage_and_apply(url: str, home: Home, value: str) -> int:
    s = open_store(url, home)
    try:
        s.stage([ChangeOp("add", "inspection.source_exceptions", value)], "t")
        return s.apply(value, "t").number
    finally:
        s.close()


def states(url: str, home: Home) -> dict[str, tuple[str, str]]:
    s = open_store(url, home)
    try:
        return {m.name: (m.state, m.description) for m in s.members()}
    finally:
        s.close()


def test_new_revision_is_picked_up_and_reported(url, home):
    m = Member()

    async def run() -> None:
        f = follower(url, home, m)
        await f.start()
        assert m.revisions == [1]
        n = await asyncio.to_thread(stage_and_apply, url, home, "10.0.0.1")
        await until(lambda: m.revisions[-1] == n)
        await until(lambda: states(url, home).get("m1", ("", ""))[0] == "Synced")
        s = open_store(url, home)
        s.learn("api.example", 443, "r", 60)
        s.close()
        await until(lambda: m.learned == ["api.example:443"])
        await f.stop()
        assert "m1" not in states(url, home)  # a stopped member leaves the list

    asyncio.run(run())


def test_refused_revision_reports_error_and_keeps_the_old_one(url, home):
    m = Member(refuse={2})

    async def run() -> None:
        f = follower(url, home, m)
        await f.start()
        await asyncio.to_thread(stage_and_apply, url, home, "10.0.0.1")
        await until(lambda: states(url, home).get("m1", ("", ""))[0] == "Error")
        _state, desc = states(url, home)["m1"]
        assert "Revision 2 could not be loaded" in desc and "still running revision 1" in desc
        assert m.revisions == [1]
        n = await asyncio.to_thread(stage_and_apply, url, home, "10.0.0.2")
        await until(lambda: m.revisions[-1] == n)
        await until(lambda: states(url, home)["m1"][0] == "Synced")
        await f.stop()

    asyncio.run(run())


def test_postgres_outage_keeps_serving_and_resyncs(private_postgres, home):
    url = private_postgres.dsn
    m = Member()

    async def run() -> None:
        f = follower(url, home, m)
        await f.start()
        assert m.revisions == [1]
        await asyncio.to_thread(private_postgres.stop)
        await until(lambda: f.outage is not None)
        assert m.revisions == [1] and f.applied == 1  # still serving revision 1
        await asyncio.to_thread(private_postgres.start)
        n = await asyncio.to_thread(stage_and_apply, url, home, "10.0.0.3")
        await until(lambda: m.revisions[-1] == n, timeout=30)
        await until(lambda: f.outage is None)
        await f.stop()

    asyncio.run(run())


def test_start_while_store_is_down_uses_the_cached_revision(private_postgres, home):
    url = private_postgres.dsn
    m1 = Member()

    async def first() -> None:
        f = follower(url, home, m1)
        await f.start()
        await asyncio.to_thread(stage_and_apply, url, home, "10.0.0.4")
        await until(lambda: m1.revisions[-1] == 2)
        await f.stop()

    asyncio.run(first())
    private_postgres.stop()
    m2 = Member()

    async def second() -> None:
        f = follower(url, home, m2)
        await f.start()
        assert m2.revisions == [2] and f.outage is not None
        await f.stop()

    asyncio.run(second())
    other = Home(home.root.parent / "empty").ensure()

    async def nothing_cached() -> None:
        with pytest.raises(StoreError):
            await follower(url, other, Member(), name="m9").start()

    asyncio.run(nothing_cached())
    private_postgres.start()
