"""``tlsgate apply|discard|diff|history|rollback|status`` through click's CliRunner, on a
SQLite store in a temporary home (members are simulated through the store API)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tlsgate.commands.store import STORE_COMMANDS, parse_duration
from tlsgate.config.home import Home
from tlsgate.errors import ConflictError, StoreError
from tlsgate.store import ChangeOp, Store, open_store

pytestmark = pytest.mark.timeout(60)

Run = Callable[..., Result]


@pytest.fixture
def group() -> click.Group:
    """The store commands in a group of their own, as the lead adds them to ``cli``."""
    g = click.Group("tlsgate")
    for command in STORE_COMMANDS:
        g.add_command(command)
    return g


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def run(group: click.Group, db: Path, home: Home, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("TLSGATE_USER", "alice")
    monkeypatch.delenv("TLSGATE_STORE", raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            group, [*args, "--home", str(home.root), "--store", str(db)], catch_exceptions=True
        )

    return invoke


@pytest.fixture
def store(db: Path, home: Home) -> Store:
    s = open_store(str(db), home)
    yield s
    s.close()


def stage(store: Store, value: str, author: str = "bob") -> None:
    store.stage([ChangeOp("add", "inspection.source_exceptions", value)], author)


def test_diff_apply_history_rollback(run: Run, store: Store):
    assert run("diff").output.strip() == "no staged changes"
    stage(store, "10.0.0.5")
    out = run("diff").output
    assert '# bob: add to inspection.source_exceptions: "10.0.0.5"' in out
    assert '+source_exceptions = ["10.0.0.5"]' in out and "--- revision 1 (applied)" in out

    r = run("apply", "-m", "dirsync agent")
    assert r.exit_code == 0 and "applied revision 2 (1 change(s))" in r.output
    assert store.head().author == f"alice@{socket.gethostname()}"
    assert store.head().message == "dirsync agent"

    stage(store, "10.0.0.6")
    r = run("apply")  # no message: the changes describe themselves
    assert r.exit_code == 0 and store.head().message.startswith("add to inspection")

    r = run("rollback", "1", "-m", "undo both")
    assert r.exit_code == 0 and "applied revision 4 with the content of revision 1" in r.output
    assert store.head().document == store.revision(1).document

    lines = run("history").output.splitlines()
    rows = [line for line in lines if line.strip("│┃ ").split(" ")[0].isdigit()]
    assert [row.strip("│┃ ").split()[0] for row in rows] == ["4", "3", "2", "1"]
    assert "undo both" in rows[0] and "dirsync agent" in rows[2]
    assert len([r for r in run("history", "--limit", "2").output.splitlines() if "alice" in r]) == 2


def test_discard_reports_what_it_dropped(run: Run, store: Store):
    stage(store, "10.0.0.1")
    stage(store, "10.0.0.2", author="carol")
    r = run("discard")
    assert r.exit_code == 0 and "discarded 2 staged change(s)" in r.output
    assert store.staged() == [] and store.head().number == 1


def test_apply_with_an_old_revision_is_a_conflict_and_keeps_the_change(run: Run, store: Store):
    stage(store, "10.0.0.1")
    assert run("apply").exit_code == 0
    stage(store, "10.0.0.2")
    r = run("apply", "--expect-revision", "1")
    assert isinstance(r.exception, ConflictError) and r.exception.exit_code == 4
    assert "revision 2 was applied by alice@" in r.exception.one_line()
    assert store.head().number == 2 and len(store.staged()) == 1
    assert run("apply", "--expect-revision", "2").exit_code == 0
    assert store.applied_config().inspection.source_exceptions == ["10.0.0.1", "10.0.0.2"]


def test_mistakes_are_store_errors(run: Run, store: Store):
    r = run("apply")
    assert isinstance(r.exception, StoreError) and "no staged changes" in r.exception.message
    r = run("rollback", "9")
    assert isinstance(r.exception, StoreError) and "no revision 9" in r.exception.message


def _members(db: Path, home: Home) -> None:
    """m1 Synced, m2 Pending, m3 Error, m4 silent for a minute (Unreachable)."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    old = open_store(str(db), home, now=lambda: past)
    old.register_member("m4", "127.0.0.1:8084", "0.1")
    old.close()
    s = open_store(str(db), home)
    stage(s, "10.0.0.1")
    s.apply("x", "t")
    for name, port in (("m1", 8081), ("m2", 8082), ("m3", 8083)):
        s.register_member(name, f"127.0.0.1:{port}", "0.1")
    s.heartbeat("m1", 2, "Synced", "")
    s.heartbeat("m2", 1, "Synced", "")
    s.heartbeat("m3", 1, "Error", "Revision 2 could not be loaded: CA file missing")
    s.close()


def test_status_table_and_json(run: Run, db: Path, home: Home):
    _members(db, home)
    r = run("status")
    assert r.exit_code == 1
    assert "not synced: m2, m3, m4" in r.output  # CliRunner mixes stderr into output
    table = {line.split()[1]: line for line in r.output.splitlines() if " m" in line[:4]}
    # (the table folds long cells to the terminal width: whole texts are checked in JSON)
    assert "Synced" in table["m1"] and "Pending" in table["m2"]
    assert "Error" in table["m3"] and "Unreachable" in table["m4"]

    r = run("status", "--json")
    data = json.loads(r.output[: r.output.rindex("}") + 1])
    assert data["revision"] == 2
    members = {m["name"]: m for m in data["members"]}
    assert {name: m["state"] for name, m in members.items()} == {
        "m1": "Synced",
        "m2": "Pending",
        "m3": "Error",
        "m4": "Unreachable",
    }
    assert members["m1"]["description"] == "Server configuration matches the stored configuration."
    assert members["m2"]["address"] == "127.0.0.1:8082" and members["m2"]["revision"] == 1
    assert members["m3"]["description"] == "Revision 2 could not be loaded: CA file missing"
    assert members["m4"]["description"].startswith("No heartbeat since")


def test_status_wait_returns_when_every_member_is_synced(run: Run, db: Path, home: Home):
    s = open_store(str(db), home)
    s.register_member("m1", "127.0.0.1:8081", "0.1")
    stage(s, "10.0.0.1")
    s.apply("x", "t")  # m1 runs revision 0: Pending
    s.close()
    polled = threading.Event()

    def member_catches_up() -> None:
        polled.wait(10)
        s2 = open_store(str(db), home)
        s2.heartbeat("m1", 2, "Synced", "")
        s2.close()

    # The member catches up once the command is polling (the first status read).
    original = Store.members

    def members(self: Store, **kw: float) -> list:
        result = original(self, **kw)
        polled.set()
        return result

    t = threading.Thread(target=member_catches_up)
    t.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Store, "members", members)
            r = run("status", "--wait", "30s")
    finally:
        t.join()
    assert r.exit_code == 0, r.output
    assert "Synced" in r.output and "not synced" not in r.output


def test_status_wait_gives_up_and_names_the_members(run: Run, db: Path, home: Home):
    s = open_store(str(db), home)
    s.register_member("m1", "127.0.0.1:8081", "0.1")
    s.close()
    start = time.monotonic()
    r = run("status", "--wait", "500ms")
    assert r.exit_code == 1 and "not synced: m1" in r.output
    assert time.monotonic() - start >= 0.5  # it did wait


def test_status_rejects_a_bad_duration(run: Run):
    r = run("status", "--wait", "soon")
    assert r.exit_code == 2 and "not a duration such as 30s" in r.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1h", 3600), ("500ms", 0.5), ("15", 15), ("1.5m", 90)],
)
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == seconds
