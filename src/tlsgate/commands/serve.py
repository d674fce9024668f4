"""``tlsgate serve``: run a proxy member."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import click

from tlsgate import eventloop, malloc
from tlsgate.commands.common import Home, home_option, store_option
from tlsgate.errors import UsageError
from tlsgate.member import DEFAULT_ADMIN, ServeOptions, run_member
from tlsgate.proxy.server import Listen
from tlsgate.workers import worker_member_name

log = logging.getLogger("tlsgate")


def _listen(_ctx: click.Context, _param: click.Parameter, value: str) -> Listen:
    try:
        return Listen.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Address the proxy listens on.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="tlsgate.toml to load at start.",
)
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Extra CA certificates (PEM) trusted for upstream servers.",
)
@click.option(
    "--admin",
    "admin",
    default=None,
    metavar="HOST:PORT|off",
    help="Admin console and API address [default: 127.0.0.1:8081, skipped if busy]; "
    "'off' disables it.",
)
@click.option(
    "--admin-tls",
    is_flag=True,
    help="Serve the admin console over HTTPS, with a certificate from tlsgate's CA for "
    "its address and localhost.",
)
@click.option("--no-inspect", is_flag=True, help="Tunnel every CONNECT without inspection.")
@click.option(
    "--member",
    default=None,
    metavar="NAME",
    help="This member's name in the array (default: the host name).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    metavar="N",
    help="Processes accepting on the --listen port (SO_REUSEPORT); one core each.",
)
@click.option(
    "--event-loop",
    type=click.Choice(eventloop.CHOICES),
    default="auto",
    show_default=True,
    envvar="TLSGATE_EVENT_LOOP",
    help="uvloop (in C, faster) or asyncio's own; auto: uvloop when it is installed. "
    "Also $TLSGATE_EVENT_LOOP.",
)
@click.option(
    "--malloc",
    "malloc_choice",
    type=click.Choice(malloc.CHOICES),
    default="tuned",
    show_default=True,
    envvar="TLSGATE_MALLOC",
    help="tuned: glibc keeps freed memory for the next buffer (fewer page faults on "
    "bulk transfers); default: glibc as it is. Also $TLSGATE_MALLOC.",
)
@click.option("--worker", "worker_index", type=int, default=0, hidden=True)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@home_option
@store_option
def serve(
    listen: Listen,
    config_file: Path | None,
    upstream_ca: Path | None,
    no_inspect: bool,
    member: str | None,
    log_level: str,
    admin: str | None,
    admin_tls: bool,
    workers: int,
    event_loop: str,
    malloc_choice: str,
    worker_index: int,
    home: Home,
    store_url: str | None,
) -> None:
    """Run the proxy (Ctrl-C or SIGTERM stops it gracefully)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    admin_listen: Listen | None = None
    if admin is None:
        admin_listen = DEFAULT_ADMIN
    elif admin.strip().lower() != "off":
        admin_listen = _listen(click.get_current_context(), click.Option(["--admin"]), admin)
    if admin_tls and admin_listen is None:
        raise UsageError(
            "--admin-tls asks for TLS on the admin console, but --admin is off",
            fix="drop --admin-tls, or give the console an address with --admin HOST:PORT",
        )
    name = member or socket.gethostname()
    if worker_index:
        # A worker started by a supervisor (workers.py): no console, no more workers.
        admin_listen, workers = None, 1
    command = ["serve", "--home", str(home.root), "--member", name, "--log-level", log_level]
    command += ["--admin", "off", "--event-loop", event_loop, "--malloc", malloc_choice]
    if upstream_ca is not None:
        command += ["--upstream-ca", str(upstream_ca.resolve())]
    if no_inspect:
        command.append("--no-inspect")
    loop = eventloop.choose(event_loop)
    opts = ServeOptions(
        home=home,
        listen=listen,
        member=worker_member_name(name, worker_index) if worker_index else name,
        store_url=store_url,
        config_file=config_file,
        upstream_ca=upstream_ca,
        no_inspect=no_inspect,
        admin=admin_listen,
        admin_required=admin is not None,
        admin_tls=admin_tls,
        workers=workers,
        worker_command=tuple(command),
        worker_index=worker_index,
        malloc=malloc_choice,
    )
    eventloop.run(loop, run_member(opts))


__all__ = ["serve"]
