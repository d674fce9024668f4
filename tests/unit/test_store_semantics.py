"""What the store promises an admin, on SQLite and PostgreSQL: nothing staged or applied
is lost (discard, replay over a moved head, conflicts), diff and history say what
happened, invalid revisions are refused with the reason, and readers never wait for a
writer.  Each test would fail if a change were dropped, duplicated or resurrected.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.unit.store_helpers import (
    Clock,
    add_source,
    applied_sources,
    clock_fixture,
    home_fixture,
    remove_source,
    store_fixture,
    url_fixture,
)
from tlsgate.config.home import Home
from tlsgate.config.model import InspectionSettings, TlsgateConfig
from tlsgate.errors import ConfigError, ConflictError, StoreError
from tlsgate.store import ChangeOp, Store, open_store
from tlsgate.store.backend import SCHEMA_VERSION, WRITER_LOCK, SqliteBackend

pytestmark = pytest.mark.timeout(60)
__fixtures__ = (url_fixture, clock_fixture, home_fixture, store_fixture)


def changed_lines(diff: list[str]) -> list[str]:
    """The + and - lines of a unified diff, without its two file headers."""
    return [
        line.rstrip("\n")
        for line in diff
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_discard_drops_exactly_the_staged_changes(store: Store):
    store.stage([add_source("10.0.0.1")], "alice")
    store.apply("first", "alice")
    store.stage([add_source("10.0.0.2"), add_source("10.0.0.3")], "bob")
    assert store.discard() == 2
    assert store.staged() == [] and store.diff() == []
    assert store.head().number == 2 and applied_sources(store) == ["10.0.0.1"]
    with pytest.raises(StoreError, match="no staged changes"):
        store.apply("nothing", "bob")
    # a discarded change does not come back with the next apply
    store.stage([add_source("10.0.0.4")], "bob")
    store.apply("second", "bob")
    assert applied_sources(store) == ["10.0.0.1", "10.0.0.4"]


def test_diff_shows_exactly_what_changes_as_toml(store: Store):
    store.stage([add_source("10.0.0.1"), add_source("10.0.0.2")], "a")
    store.apply("two", "a")
    store.stage(
        [remove_source("10.0.0.1"), ChangeOp("set", "inspection.on_client_certificate", "deny")],
        "a",
    )
    diff = store.diff()
    assert diff[0].startswith("--- revision 2 (applied)") and diff[1].startswith("+++ staged")
    assert sorted(changed_lines(diff)) == sorted(
        [
            '-on_client_certificate = "tunnel"',
            '+on_client_certificate = "deny"',
            '-source_exceptions = ["10.0.0.1", "10.0.0.2"]',
            '+source_exceptions = ["10.0.0.2"]',
        ]
    )


def test_diff_of_an_invalid_staged_configuration_names_the_reason(store: Store):
    store.stage([ChangeOp("set", "inspection.on_client_certificate", "allow")], "a")
    lines = changed_lines(store.diff())
    assert lines[0].startswith("+# the staged configuration does not validate:")
    assert "inspection.on_client_certificate" in lines[0]
    # only the changed value besides the reason: the rest of the document is context
    assert sorted(lines[1:]) == sorted(
        ['+    "on_client_certificate": "allow",', '-    "on_client_certificate": "tunnel",']
    )


def test_history_is_newest_first_with_author_time_and_parent(store: Store, clock: Clock):
    for i, author in enumerate(["alice", "bob", "carol"], start=1):
        clock.advance(minutes=1)
        store.stage([add_source(f"10.0.0.{i}")], author)
        store.apply(f"change {i}", author)
    revs = store.history()
    assert [r.number for r in revs] == [4, 3, 2, 1]
    assert [r.author for r in revs[:3]] == ["carol", "bob", "alice"]
    assert [r.message for r in revs[:3]] == ["change 3", "change 2", "change 1"]
    assert [r.parent for r in revs] == [3, 2, 1, None]
    assert revs[0].created_at - revs[2].created_at == timedelta(minutes=2)
    assert [r.number for r in store.history(2)] == [4, 3]
    assert store.revision(3).document["inspection"]["source_exceptions"] == [
        "10.0.0.1",
        "10.0.0.2",
    ]


def test_staged_changes_replay_over_a_head_that_moved(store: Store):
    """Staged operations are not a snapshot: a rollback applied meanwhile stays applied."""
    store.stage([ChangeOp("set", "inspection.on_client_certificate", "deny")], "a")
    store.apply("deny", "a")
    store.stage([add_source("10.0.0.9")], "b")
    store.rollback(1, "undo deny", "c")  # staged changes are left alone
    assert [op.value for op in store.staged()] == ["10.0.0.9"]
    rev = store.apply("exception", "b")
    assert rev.number == 4 and rev.parent == 3
    config = store.applied_config()
    assert config.inspection.on_client_certificate == "tunnel"  # the rollback survived
    assert config.inspection.source_exceptions == ["10.0.0.9"]  # and so did the change


def test_a_staged_removal_that_no_longer_applies_changes_nothing(store: Store):
    store.stage([add_source("10.0.0.1")], "a")
    store.apply("add", "a")
    store.stage([remove_source("10.0.0.1")], "b")
    store.rollback(1, "back to defaults", "c")
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.1' is not in inspection\.source_exceptions"):
        store.apply("remove", "b")
    assert store.head().number == 3 and len(store.staged()) == 1


def test_conflict_says_who_applied_and_keeps_the_staged_changes(
    url: str, home: Home, store: Store, clock: Clock
):
    other = open_store(url, home, now=clock)
    try:
        store.stage([add_source("10.0.0.1")], "alice")
        looked_at = other.head().number
        store.apply("alice's change", "alice")
        other.stage([add_source("10.0.0.2")], "bob")
        with pytest.raises(ConflictError) as err:
            other.apply("bob's change", "bob", expected_head=looked_at)
        text = err.value.one_line()
        assert "revision 2 was applied by alice at 2026-11-25 12:00:00 UTC" in text
        assert "'tlsgate diff'" in text and err.value.exit_code == 4
        assert store.head().number == 2 and [op.value for op in other.staged()] == ["10.0.0.2"]
        other.apply("bob's change", "bob", expected_head=2)
        assert applied_sources(store) == ["10.0.0.1", "10.0.0.2"]
    finally:
        other.close()


def test_unresolved_reference_is_refused_with_the_reason(store: Store):
    rule = {"name": "Partners", "action": "allow", "sources": ["Branch"], "destinations": ["any"]}
    store.stage([ChangeOp("add", "rules", rule)], "a")
    with pytest.raises(ConfigError) as err:
        store.apply("partners", "a")
    assert "rules[1].sources[0]: unknown network or computer set 'Branch'" in err.value.message
    assert store.head().number == 1 and len(store.staged()) == 1


def test_whole_document_import_and_staged_author_and_time(store: Store, clock: Clock):
    wanted = TlsgateConfig(
        inspection=InspectionSettings(
            on_client_certificate="deny", source_exceptions=["10.1.0.0/16"]
        )
    )
    store.stage([ChangeOp("set", "", wanted.model_dump(mode="json"))], "importer")
    [op] = store.staged()
    assert (op.op, op.path, op.author, op.time) == ("set", "", "importer", clock.t)
    store.apply("import", "importer")
    assert store.applied_config() == wanted


def test_learned_exceptions_with_an_explicit_time(store: Store, clock: Clock):
    t0 = clock.t
    first = store.learn("api.example", 443, "client certificate", 60, now=t0)
    assert store.is_learned("api.example", 443, now=t0 + timedelta(seconds=59))
    assert not store.is_learned("api.example", 8443, now=t0)
    again = store.learn(
        "api.example", 443, "client certificate", 60, now=t0 + timedelta(seconds=30)
    )
    assert again.hits == 2 and again.first_seen == first.first_seen
    assert again.expires_at == t0 + timedelta(seconds=90)  # renewed from the last hit
    later = t0 + timedelta(seconds=91)
    assert not store.is_learned("api.example", 443, now=later) and store.learned(now=later) == []
    renewed = store.learn("api.example", 443, "client certificate", 60, now=later)
    assert renewed.hits == 1 and renewed.first_seen == later  # expired: counted afresh
    assert [e.hits for e in store.learned(now=later)] == [1]


def test_member_unreachable_then_back(store: Store, clock: Clock):
    store.register_member("m1", "127.0.0.1:8080", "0.1")
    [m] = store.members()
    assert m.state == "Pending" and m.applied_revision == 0
    store.heartbeat("m1", 1, "Synced", "")
    clock.advance(seconds=14)
    assert store.members(unreachable_after=15)[0].state == "Synced"
    clock.advance(seconds=2)
    [m] = store.members(unreachable_after=15)
    assert (
        m.state == "Unreachable" and "No heartbeat since 2026-11-25 12:00:00 UTC" in m.description
    )
    store.heartbeat("m1", 1, "Synced", "")
    assert store.members(unreachable_after=15)[0].state == "Synced"


def test_schema_is_migrated_once_and_a_newer_one_is_refused(url: str, home: Home, store: Store):
    again = open_store(url, home)
    try:
        assert [r.number for r in again.history()] == [1]
        versions = again.db.read("SELECT version FROM schema_migrations ORDER BY version")
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        with again.db.transaction("test"):
            again.db.query("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 'x')")
    finally:
        again.close()
    with pytest.raises(StoreError, match="newer than this tlsgate"):
        open_store(url, home)


# -- readers and writers -----------------------------------------------------------------


def test_sqlite_readers_do_not_wait_for_a_writer_and_a_long_lock_is_one_line(
    tmp_path: Path, clock: Clock
):
    path = tmp_path / "store.db"
    store = Store(SqliteBackend(path, busy_timeout=0.2), now=clock)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another admin's apply in progress
        assert store.head().number == 1 and store.staged() == [] and store.diff() == []
        assert store.members() == [] and store.learned() == []
        with pytest.raises(StoreError) as err:
            store.stage([add_source("10.0.0.1")], "a")
        text = err.value.one_line()
        assert str(path) in text and "locked" in text and "\n" not in text
        holder.execute("ROLLBACK")
        assert store.staged() == []  # the refused change was not half-written
        store.stage([add_source("10.0.0.1")], "a")
        assert [op.value for op in store.staged()] == ["10.0.0.1"]
    finally:
        holder.close()
        store.close()


def test_postgres_readers_do_not_wait_for_a_writer(fresh_pg_dsn: str, home: Home):
    store = open_store(fresh_pg_dsn, home)
    store.stage([add_source("10.0.0.1")], "a")
    with psycopg.connect(fresh_pg_dsn, autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
        try:
            assert store.head().number == 1 and len(store.staged()) == 1
            assert store.diff() and store.members() == [] and store.history()[0].number == 1
        finally:
            holder.execute("ROLLBACK")
    store.apply("after the lock", "a")
    assert applied_sources(store) == ["10.0.0.1"]
    store.close()
