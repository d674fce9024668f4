"""The configuration store on SQLite and PostgreSQL: the same tests on both backends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tlsgate.config.home import Home
from tlsgate.errors import ConfigError, ConflictError, StoreError
from tlsgate.store import ChangeOp, Store, apply_ops, open_store
from tlsgate.store.store import SYNCED_TEXT


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("fresh_pg_dsn")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def store(url, home, clock):
    s = open_store(url, home, now=clock)
    yield s
    s.close()


def add_source(value: str) -> ChangeOp:
    return ChangeOp("add", "inspection.source_exceptions", value)


def test_initial_revision_is_the_defaults(store: Store):
    head = store.head()
    assert head.number == 1 and head.message == "initial configuration"
    assert store.applied_config().inspection.on_client_certificate == "tunnel"
    assert store.history() == [head]


def test_stage_diff_apply(store: Store):
    store.stage([add_source("10.0.0.5")], "alice")
    diff = "".join(store.diff())
    assert '+source_exceptions = ["10.0.0.5"]' in diff
    rev = store.apply("dirsync exception", "alice")
    assert rev.number == 2 and rev.author == "alice" and rev.message == "dirsync exception"
    assert store.applied_config().inspection.source_exceptions == ["10.0.0.5"]
    assert store.staged() == []
    assert [r.number for r in store.history()] == [2, 1]


def test_two_admins_staging_at_once_lose_nothing(url, home, store: Store):
    def stage(i: int) -> None:
        s = open_store(url, home)
        try:
            for j in range(5):
                s.stage([add_source(f"10.{i}.0.{j}")], f"admin{i}")
        finally:
            s.close()

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.apply("all", "root")
    got = set(store.applied_config().inspection.source_exceptions)
    assert got == {f"10.{i}.0.{j}" for i in range(3) for j in range(5)}


def test_concurrent_applies_one_conflicts_and_nothing_is_lost(url, home, store: Store):
    store.stage([add_source("10.0.0.1")], "a")
    results: list[object] = []

    def apply(name: str) -> None:
        s = open_store(url, home)
        try:
            results.append(s.apply(name, name, expected_head=1).number)
        except (ConflictError, StoreError) as exc:
            results.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=apply, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [r for r in results if isinstance(r, int)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert numbers == [2] and len(conflicts) == 1
    assert "since you looked at revision 1" in conflicts[0].message
    assert store.applied_config().inspection.source_exceptions == ["10.0.0.1"]
    # the loser stages again and applies: both changes are there
    store.stage([add_source("10.0.0.2")], "second")
    store.apply("again", "second", expected_head=2)
    assert store.applied_config().inspection.source_exceptions == ["10.0.0.1", "10.0.0.2"]


def test_invalid_revision_is_refused_and_changes_nothing(store: Store):
    store.stage([ChangeOp("set", "inspection.on_client_certificate", "allow")], "a")
    with pytest.raises(ConfigError) as err:
        store.apply("bad", "a")
    assert "on_client_certificate" in err.value.message and "revision 2" in err.value.message
    assert store.head().number == 1
    assert len(store.staged()) == 1  # kept, for the admin to fix or discard
    assert store.discard() == 1 and store.staged() == []


def test_staging_an_impossible_change_is_refused(store: Store):
    with pytest.raises(ConfigError, match=r"is not in inspection\.source_exceptions"):
        store.stage([ChangeOp("remove", "inspection.source_exceptions", "10.9.9.9")], "a")
    assert store.staged() == []


def test_expected_head_mismatch_is_a_conflict(store: Store):
    store.stage([add_source("10.0.0.1")], "a")
    with pytest.raises(ConflictError):
        store.apply("x", "a", expected_head=7)
    assert store.head().number == 1 and len(store.staged()) == 1


def test_nothing_to_apply(store: Store):
    with pytest.raises(StoreError, match="no staged changes"):
        store.apply("x", "a")


def test_rollback_applies_old_content_as_new_revision(store: Store):
    store.stage([ChangeOp("set", "inspection.on_client_certificate", "deny")], "a")
    store.apply("deny", "a")
    store.stage([add_source("10.1.1.1")], "a")
    store.apply("exception", "a")
    rev = store.rollback(1, "back to defaults", "b")
    assert rev.number == 4 and rev.parent == 3
    assert store.revision(4).document == store.revision(1).document
    assert store.applied_config().inspection.on_client_certificate == "tunnel"
    with pytest.raises(StoreError, match="no revision 99"):
        store.rollback(99, "x", "b")


def test_apply_document_only_if_different(store: Store):
    doc = store.head().document
    assert store.apply_document(doc, "same", "a", only_if_different=True).number == 1
    doc2 = apply_ops(doc, [add_source("10.0.0.9")])
    assert store.apply_document(doc2, "file", "a", only_if_different=True).number == 2


def test_member_states(store: Store, clock: Clock):
    store.register_member("m1", "127.0.0.1:8080", "0.1")
    store.register_member("m2", "127.0.0.1:8081", "0.1")
    store.heartbeat("m1", 1, "Synced", "")
    store.heartbeat("m2", 1, "Error", "Revision 1 could not be loaded: bad CA file")
    states = {m.name: m for m in store.members()}
    assert states["m1"].state == "Synced" and states["m1"].description == SYNCED_TEXT
    assert states["m2"].state == "Error" and "bad CA file" in states["m2"].description
    store.stage([add_source("10.0.0.1")], "a")
    store.apply("x", "a")
    assert {m.name: m.state for m in store.members()}["m1"] == "Pending"
    clock.advance(seconds=30)
    assert all(m.state == "Unreachable" for m in store.members(unreachable_after=15))
    assert store.remove_member("m1") and not store.remove_member("m1")


def test_learned_exceptions_expire(store: Store, clock: Clock):
    e = store.learn("api.bank.example", 443, "server requested a client certificate", 3600)
    assert e.hits == 1
    clock.advance(minutes=10)
    e2 = store.learn("api.bank.example", 443, "server requested a client certificate", 3600)
    assert e2.hits == 2 and e2.first_seen == e.first_seen
    assert [x.host for x in store.learned()] == ["api.bank.example"]
    clock.advance(hours=2)
    assert store.learned() == []
    store.learn("a.example", 8443, "r", 60)
    assert store.forget("a.example", 8443) and not store.forget("a.example", 8443)
    store.learn("b.example", 443, "r", 60)
    store.learn("c.example", 443, "r", 60)
    assert store.forget_all() == 2


def test_apply_ops_is_pure():
    doc = {"inspection": {"source_exceptions": ["a"]}}
    out = apply_ops(
        doc,
        [
            ChangeOp("add", "inspection.source_exceptions", "b"),
            ChangeOp("add", "inspection.source_exceptions", "b"),
            ChangeOp("set", "limits.max_header_count", 50),
        ],
    )
    assert doc == {"inspection": {"source_exceptions": ["a"]}}
    assert out == {
        "inspection": {"source_exceptions": ["a", "b"]},
        "limits": {"max_header_count": 50},
    }
    with pytest.raises(ConfigError):
        apply_ops(doc, [ChangeOp("add", "inspection", "x")])


def test_unreachable_postgres_is_one_clear_line(home):
    with pytest.raises(StoreError) as err:
        open_store("postgresql://tlsgate:secret@127.0.0.1:1/tlsgate", home)
    text = err.value.one_line()
    assert "127.0.0.1:1" in text and "secret" not in text and "\n" not in text
    assert "PostgreSQL" in text


def test_corrupt_sqlite_file_is_one_clear_line(tmp_path, home):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        open_store(str(bad), home)
    assert "not a tlsgate store" in err.value.one_line() or "not a database" in err.value.one_line()
