"""``tlsgate inspection …``: HTTPS inspection settings, exceptions and learned servers.

Changes are staged in the store; ``tlsgate apply`` makes them live on every member.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.table import Table

from tlsgate.commands.common import Home, console, home_option, store_option
from tlsgate.commands.store import opened
from tlsgate.errors import ProtocolError, UsageError
from tlsgate.http1.target import parse_authority
from tlsgate.member import author
from tlsgate.policy.match import normalise_domain, parse_source
from tlsgate.store import ChangeOp

SOURCES = "inspection.source_exceptions"
DESTINATIONS = "inspection.destination_exceptions"


def _stage(store_url: str | None, home: Home, op: ChangeOp) -> None:
    with opened(store_url, home) as store:
        count = store.stage([op], author())
    console.print(
        f"staged: {op.describe()}\n{count} change(s) staged; run 'tlsgate apply' to "
        "make them live on every member ('tlsgate diff' shows them)"
    )


def _list(store_url: str | None, home: Home, path: str, title: str) -> None:
    with opened(store_url, home) as store:
        applied = store.applied_config().inspection
        staged = store.staged_config().inspection
    key = path.split(".")[-1]
    now, later = getattr(applied, key), getattr(staged, key)
    if not now and not later:
        console.print(f"no {title}")
        return
    for entry in now:
        mark = "" if entry in later else "  (removal staged)"
        console.print(f"{entry}{mark}")
    for entry in later:
        if entry not in now:
            console.print(f"{entry}  (staged, not applied yet)")


@click.group("inspection")
def inspection() -> None:
    """HTTPS inspection: exceptions, client-certificate servers, learned servers."""


@inspection.group("except")
def except_group() -> None:
    """Inspection exceptions: sources and destinations that are tunnelled, not inspected."""


@except_group.group("source")
def source_group() -> None:
    """Exceptions by client address (IP or CIDR)."""


@source_group.command("add")
@click.argument("address")
@home_option
@store_option
def source_add(address: str, home: Home, store_url: str | None) -> None:
    """Never inspect connections from ADDRESS (IP or CIDR)."""
    try:
        net = parse_source(address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    value = str(net.network_address) if net.num_addresses == 1 else str(net)
    _stage(store_url, home, ChangeOp("add", SOURCES, value))


@source_group.command("remove")
@click.argument("address")
@home_option
@store_option
def source_remove(address: str, home: Home, store_url: str | None) -> None:
    """Remove a source exception."""
    _stage(store_url, home, ChangeOp("remove", SOURCES, address.strip()))


@source_group.command("list")
@home_option
@store_option
def source_list(home: Home, store_url: str | None) -> None:
    """Source exceptions (applied, and staged changes marked)."""
    _list(store_url, home, SOURCES, "source exceptions")


@except_group.group("destination")
def destination_group() -> None:
    """Exceptions by destination: exact name or *.domain (CONNECT host, SNI, certificate)."""


@destination_group.command("add")
@click.argument("name")
@home_option
@store_option
def destination_add(name: str, home: Home, store_url: str | None) -> None:
    """Never inspect connections to NAME (host name, IP, or *.domain)."""
    try:
        value = normalise_domain(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _stage(store_url, home, ChangeOp("add", DESTINATIONS, value))


@destination_group.command("remove")
@click.argument("name")
@home_option
@store_option
def destination_remove(name: str, home: Home, store_url: str | None) -> None:
    """Remove a destination exception."""
    _stage(store_url, home, ChangeOp("remove", DESTINATIONS, name.strip().lower().rstrip(".")))


@destination_group.command("list")
@home_option
@store_option
def destination_list(home: Home, store_url: str | None) -> None:
    """Destination exceptions (applied, and staged changes marked)."""
    _list(store_url, home, DESTINATIONS, "destination exceptions")


@inspection.command("on-client-certificate")
@click.argument("action", type=click.Choice(["tunnel", "deny"]))
@home_option
@store_option
def on_client_certificate(action: str, home: Home, store_url: str | None) -> None:
    """What to do when a server asks for a client certificate: tunnel it, or deny (12229)."""
    _stage(store_url, home, ChangeOp("set", "inspection.on_client_certificate", action))


@inspection.command("enable")
@home_option
@store_option
def enable(home: Home, store_url: str | None) -> None:
    """Turn HTTPS inspection on."""
    _stage(store_url, home, ChangeOp("set", "inspection.enabled", True))


@inspection.command("disable")
@home_option
@store_option
def disable(home: Home, store_url: str | None) -> None:
    """Turn HTTPS inspection off: every CONNECT is tunnelled."""
    _stage(store_url, home, ChangeOp("set", "inspection.enabled", False))


@inspection.group("learned")
def learned_group() -> None:
    """Servers learned to need a client certificate (tunnelled without a probe)."""


@learned_group.command("list")
@home_option
@store_option
def learned_list(home: Home, store_url: str | None) -> None:
    """Learned exceptions that have not expired."""
    with opened(store_url, home) as store:
        entries = store.learned()
    if not entries:
        console.print("no learned exceptions")
        return
    table = Table()
    for col in ("Server", "Reason", "First seen (UTC)", "Last seen (UTC)", "Hits", "Expires in"):
        table.add_column(col, overflow="fold")
    now = datetime.now(UTC)
    for e in entries:
        left = int((e.expires_at - now).total_seconds())
        table.add_row(
            f"{e.host}:{e.port}",
            e.reason,
            f"{e.first_seen:%Y-%m-%d %H:%M:%S}",
            f"{e.last_seen:%Y-%m-%d %H:%M:%S}",
            str(e.hits),
            f"{left // 3600} h {left % 3600 // 60} min",
        )
    console.print(table)


@learned_group.command("forget")
@click.argument("server", required=False, metavar="HOST:PORT")
@click.option("--all", "forget_all", is_flag=True, help="Forget every learned exception.")
@home_option
@store_option
def learned_forget(server: str | None, forget_all: bool, home: Home, store_url: str | None) -> None:
    """Forget a learned server (it is probed again on its next connection)."""
    if forget_all == (server is not None):
        raise UsageError(
            "give HOST:PORT or --all",
            fix="e.g. tlsgate inspection learned forget api.example.com:443",
        )
    with opened(store_url, home) as store:
        if forget_all:
            console.print(f"forgot {store.forget_all()} learned exception(s)")
            return
        assert server is not None
        try:
            auth = parse_authority(server.encode("idna"), default_port=443)
        except (ProtocolError, UnicodeError):
            raise UsageError(f"{server!r} is not HOST:PORT") from None
        if not store.forget(auth.host, auth.port):
            raise UsageError(
                f"{auth} is not a learned exception", fix="see 'tlsgate inspection learned list'"
            )
    console.print(f"forgot {auth}; members probe it again on its next connection")


@inspection.command("show")
@home_option
@store_option
def show(home: Home, store_url: str | None) -> None:
    """The inspection settings as applied, with staged changes."""
    with opened(store_url, home) as store:
        head = store.head_number()
        applied = store.applied_config().inspection
        staged = store.staged_config().inspection
        learned = store.learned()
    rows = [
        ("HTTPS inspection", "on" if applied.enabled else "off", "on" if staged.enabled else "off"),
        ("on client certificate", applied.on_client_certificate, staged.on_client_certificate),
        (
            "auto-tunnel destinations",
            ", ".join(applied.auto_tunnel_destinations) or "any",
            ", ".join(staged.auto_tunnel_destinations) or "any",
        ),
        (
            "learned exceptions expire after",
            f"{applied.learned_ttl_hours:g} h",
            f"{staged.learned_ttl_hours:g} h",
        ),
        (
            "source exceptions",
            ", ".join(applied.source_exceptions) or "-",
            ", ".join(staged.source_exceptions) or "-",
        ),
        (
            "destination exceptions",
            ", ".join(applied.destination_exceptions) or "-",
            ", ".join(staged.destination_exceptions) or "-",
        ),
    ]
    table = Table(title=f"HTTPS inspection (applied revision {head})")
    for col in ("Setting", "Applied", "Staged"):
        table.add_column(col, overflow="fold")
    for name, now, later in rows:
        table.add_row(name, now, later if later != now else "")
    console.print(table)
    console.print(f"{len(learned)} learned exception(s): 'tlsgate inspection learned list'")
