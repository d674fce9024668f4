"""``tlsgate log``: list, filter and follow the Web Proxy log; ``tlsgate log show ID``.

Thin: options become a :class:`~tlsgate.log.query.LogQuery`, the query module answers,
the formats module renders.  Errors from the log store reach ``tlsgate.cli.main`` as
:class:`~tlsgate.errors.TlsgateError` and are printed there as one line.
"""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import datetime
from typing import Any

import click

from tlsgate.commands.common import console, err_console, home_option, store_option
from tlsgate.config.home import Home, resolve_home
from tlsgate.errors import TlsgateError, UsageError
from tlsgate.log.database import LogDatabase
from tlsgate.log.formats import render_detail, table, to_json, to_squid, to_w3c, w3c_header
from tlsgate.log.query import (
    LogQuery,
    find_request,
    follow,
    latest_id,
    parse_since,
    parse_source,
    run_query,
)
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import open_log_sink

FORMATS = ("table", "json", "w3c", "squid")


class _Since(click.ParamType[datetime]):
    name = "10m|ISO-TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


class _Source(click.ParamType[ipaddress.IPv4Network | ipaddress.IPv6Network]):
    name = "IP|CIDR"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return value
        try:
            return parse_source(str(value))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


class _Printer:
    """Writes records in one output format; the table and W3C header print once."""

    def __init__(self, fmt: str, *, follow: bool) -> None:
        self.fmt = fmt
        self.follow = follow
        self.started = False
        self.console = console

    def print(self, records: list[LogRecord]) -> None:
        if self.fmt == "table":
            if records:
                self.console.print(
                    table(
                        records,
                        header=not self.started,
                        width=self.console.width,
                        fixed=self.follow,
                    )
                )
                self.started = True
            return
        if self.fmt == "w3c" and not self.started:
            click.echo(w3c_header(), nl=False)
        self.started = True
        render = {"json": to_json, "w3c": to_w3c, "squid": to_squid}[self.fmt]
        for r in records:
            click.echo(render(r))


@click.group("log", invoke_without_command=True)
@click.option(
    "--follow",
    "-f",
    "follow_",
    is_flag=True,
    help="Keep running and print new records as they are logged (Ctrl-C ends).",
)
@click.option(
    "--status",
    type=int,
    multiple=True,
    metavar="N",
    help="Only this status (HTTP or catalogue code such as 12229); repeatable.",
)
@click.option(
    "--source",
    type=_Source(),
    default=None,
    help="Only clients with this IP address or in this CIDR network.",
)
@click.option(
    "--host", metavar="HOST", help="Only this destination host; *.example.com for its subdomains."
)
@click.option("--rule", metavar="NAME", help="Only requests decided by this rule.")
@click.option("--user", metavar="USER", help="Only this user ('anonymous' when none).")
@click.option(
    "--since",
    type=_Since(),
    default=None,
    help="Only records from this time on: 10m, 2h, 3d, 1w ago or an ISO time (UTC).",
)
@click.option("--until", type=_Since(), default=None, help="Only records up to this time.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most the newest N matching records.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output: a table, JSON lines, W3C extended or Squid.",
)
@home_option
@store_option
@click.pass_context
def log(
    ctx: click.Context,
    follow_: bool,
    status: tuple[int, ...],
    source: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
    host: str | None,
    rule: str | None,
    user: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    fmt: str,
    home: Home,
    store_url: str | None,
) -> None:
    """List the Web Proxy log (newest LIMIT records, oldest first), or follow it."""
    if ctx.invoked_subcommand is not None:
        return
    query = LogQuery(
        status=status,
        source=source,
        host=host,
        rule=rule,
        user=user,
        since=since,
        until=until,
        limit=limit,
    )
    db = open_log_sink(store_url, home)
    try:
        show_log(db, query, fmt=fmt, follow_new=follow_)
    finally:
        db.close()


def show_log(db: LogDatabase, query: LogQuery, *, fmt: str, follow_new: bool) -> None:
    """Print the matching records, then (``follow_new``) new ones until Ctrl-C."""
    printer = _Printer(fmt, follow=follow_new)
    last = latest_id(db)
    records = run_query(db, query, up_to_id=last)
    printer.print(records)
    if not follow_new:
        if not records and fmt == "table":
            err_console.print("No matching records.")
        return

    async def tail() -> None:
        async for rec in follow(db, query, after_id=last):
            printer.print([rec])

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        return


@log.command("show")
@click.argument("request_id")
@home_option
@store_option
@click.pass_context
def show(ctx: click.Context, request_id: str, home: Home, store_url: str | None) -> None:
    """Print the detailed view of the record with REQUEST_ID."""
    home, store_url = _inherit_location(ctx, home, store_url)
    db = open_log_sink(store_url, home)
    try:
        record = find_request(db, request_id.strip())
    finally:
        db.close()
    if record is None:
        raise TlsgateError(
            f"no log record with request id '{request_id}'",
            fix="list recent records with 'tlsgate log --format json' to see their ids",
        )
    click.echo(render_detail(record))


def _inherit_location(
    ctx: click.Context, home: Home, store_url: str | None
) -> tuple[Home, str | None]:
    """``tlsgate log --home X show ID`` means the same as ``tlsgate log show ID --home X``."""
    parent = ctx.parent
    if parent is None:
        return home, store_url
    src = click.core.ParameterSource.DEFAULT
    if ctx.get_parameter_source("home_dir") == src and parent.params.get("home_dir"):
        home = resolve_home(parent.params["home_dir"])
    if ctx.get_parameter_source("store_url") == src and parent.params.get("store_url"):
        store_url = parent.params["store_url"]
    return home, store_url
