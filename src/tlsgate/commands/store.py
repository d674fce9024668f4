"""``tlsgate apply|discard|diff|history|rollback|status``: the configuration store."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.table import Table
from rich.text import Text

from tlsgate.commands.common import Home, console, home_option, store_option
from tlsgate.member import author
from tlsgate.store import Store, open_store
from tlsgate.store.store import MemberStatus

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 2m or 1h")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


@contextmanager
def opened(store_url: str | None, home: Home) -> Iterator[Store]:
    store = open_store(store_url, home)
    try:
        yield store
    finally:
        store.close()


@click.command("apply")
@click.option("-m", "--message", default="", help="Why: recorded with the revision.")
@click.option(
    "--expect-revision",
    type=int,
    default=None,
    metavar="N",
    help="Refuse (exit 4) if the applied revision is no longer N.",
)
@home_option
@store_option
def apply_cmd(message: str, expect_revision: int | None, home: Home, store_url: str | None) -> None:
    """Validate the staged changes and make them the new applied revision."""
    with opened(store_url, home) as store:
        staged = store.staged()
        rev = store.apply(
            message or "; ".join(op.describe() for op in staged)[:200],
            author(),
            expected_head=expect_revision,
        )
    console.print(
        f"applied revision {rev.number} ({len(staged)} change(s)); members load it "
        "within seconds: 'tlsgate status --wait 30s' waits for them"
    )


@click.command("discard")
@home_option
@store_option
def discard_cmd(home: Home, store_url: str | None) -> None:
    """Drop every staged change."""
    with opened(store_url, home) as store:
        n = store.discard()
    console.print(f"discarded {n} staged change(s)")


@click.command("diff")
@home_option
@store_option
def diff_cmd(home: Home, store_url: str | None) -> None:
    """Show the staged changes against the applied revision."""
    with opened(store_url, home) as store:
        staged = store.staged()
        lines = store.diff()
    if not staged:
        console.print("no staged changes")
        return
    for op in staged:
        console.print(f"# {op.author}: {op.describe()}")
    click.echo("".join(lines), nl=False)


@click.command("history")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@home_option
@store_option
def history_cmd(limit: int, home: Home, store_url: str | None) -> None:
    """List applied revisions, newest first."""
    with opened(store_url, home) as store:
        revs = store.history(limit)
    table = Table()
    for col in ("Revision", "Applied (UTC)", "Author", "Message"):
        table.add_column(col, overflow="fold")
    for r in revs:
        table.add_row(str(r.number), f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.author, r.message)
    console.print(table)


@click.command("rollback")
@click.argument("revision", type=int)
@click.option("-m", "--message", default="", help="Why: recorded with the new revision.")
@home_option
@store_option
def rollback_cmd(revision: int, message: str, home: Home, store_url: str | None) -> None:
    """Apply an old revision's content as a new revision."""
    with opened(store_url, home) as store:
        rev = store.rollback(revision, message or f"rollback to revision {revision}", author())
    console.print(f"applied revision {rev.number} with the content of revision {revision}")


def _members_table(head: int, members: list[MemberStatus]) -> Table:
    table = Table(title=f"Configuration: applied revision {head}")
    for col in ("Member", "Address", "Revision", "State", "Last heartbeat (UTC)", "Description"):
        table.add_column(col, overflow="fold")
    colours = {"Synced": "green", "Pending": "yellow", "Error": "red", "Unreachable": "red"}
    for m in members:
        table.add_row(
            m.name,
            m.address,
            str(m.applied_revision),
            Text(m.state, style=colours[m.state]),
            f"{m.heartbeat_at:%H:%M:%S}",
            m.description,
        )
    return table


@click.command("status")
@click.option(
    "--wait",
    "wait",
    default=None,
    metavar="DURATION",
    help="Wait up to DURATION (30s, 2m) until every member is Synced.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the members as JSON.")
@click.option(
    "--unreachable-after",
    default="15s",
    show_default=True,
    metavar="DURATION",
    help="A member without a heartbeat for this long is Unreachable.",
)
@home_option
@store_option
def status_cmd(
    wait: str | None, as_json: bool, unreachable_after: str, home: Home, store_url: str | None
) -> None:
    """Every member's state; exits 0 only when all are Synced (like TMG's Monitoring →
    Configuration)."""
    deadline = time.monotonic() + (parse_duration(wait) if wait else 0)
    stale = parse_duration(unreachable_after)
    with opened(store_url, home) as store:
        while True:
            head = store.head_number()
            members = store.members(unreachable_after=stale)
            ok = bool(members) and all(m.state == "Synced" for m in members)
            if ok or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "revision": head,
                    "members": [
                        {
                            "name": m.name,
                            "address": m.address,
                            "revision": m.applied_revision,
                            "state": m.state,
                            "description": m.description,
                            "heartbeat_at": m.heartbeat_at.isoformat(),
                        }
                        for m in members
                    ],
                },
                indent=2,
            )
        )
    elif members:
        console.print(_members_table(head, members))
    else:
        console.print(
            f"applied revision {head}; no member has registered (start one with 'tlsgate serve')"
        )
    if not ok:
        not_synced = [m.name for m in members if m.state != "Synced"] or ["(no members)"]
        click.echo(f"tlsgate: not synced: {', '.join(not_synced)}", err=True)
        raise SystemExit(1)


STORE_COMMANDS = [apply_cmd, discard_cmd, diff_cmd, history_cmd, rollback_cmd, status_cmd]
