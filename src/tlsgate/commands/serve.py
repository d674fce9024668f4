"""``tlsgate serve``: run a proxy member."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import click

from tlsgate import __version__
from tlsgate.commands.common import Home, home_option, store_option
from tlsgate.config.loader import load_config_file
from tlsgate.config.model import TlsgateConfig, UpstreamSettings
from tlsgate.errors import UsageError
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import LogSink, W3CFileSink, open_log_sink
from tlsgate.log.writer import LogWriter, Retention
from tlsgate.proxy.runtime import Runtime
from tlsgate.proxy.server import Listen, serve_until_stopped
from tlsgate.tls.ca import LeafMinter, load_or_create_ca

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
@click.option("--no-inspect", is_flag=True, help="Tunnel every CONNECT without inspection.")
@click.option(
    "--member",
    default=None,
    metavar="NAME",
    help="This member's name in the array (default: the host name).",
)
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
    home: Home,
    store_url: str | None,
) -> None:
    """Run the proxy (Ctrl-C or SIGTERM stops it gracefully)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = load_config_file(config_file) if config_file else TlsgateConfig()
    upstream = None
    if upstream_ca is not None:
        upstream = UpstreamSettings(
            ca_file=upstream_ca.resolve(), use_system_trust=config.upstream.use_system_trust
        )
    name = member or socket.gethostname()
    asyncio.run(_run(home, listen, config, upstream, no_inspect, name, store_url))


async def _run(
    home: Home,
    listen: Listen,
    config: TlsgateConfig,
    upstream: UpstreamSettings | None,
    no_inspect: bool,
    member: str,
    store_url: str | None,
) -> None:
    home.ensure()
    ca = load_or_create_ca(home)
    minter = LeafMinter(ca, home)
    writer = _log_writer(config, home, store_url)
    writer.start()
    runtime = Runtime(
        config=config,
        minter=minter,
        log=writer,
        member=member,
        inspect_override=False if no_inspect else None,
        upstream_ca_override=upstream,
    )

    async def started(server: asyncio.Server) -> None:
        mode = "inspection on" if runtime.inspection_enabled else "inspection off"
        log.info(
            "tlsgate %s member %s listening on %s (%s); CA %s; home %s; pid %d",
            __version__,
            member,
            listen,
            mode,
            home.ca_cert,
            home.root,
            os.getpid(),
        )

    try:
        await serve_until_stopped(runtime, listen, on_started=started)
    finally:
        await writer.stop()
    log.info("stopped")


def _log_writer(config: TlsgateConfig, home: Home, store_url: str | None) -> LogWriter:
    settings = config.log
    sinks: list[LogSink] = [open_log_sink(store_url, home)]
    if settings.w3c_directory is not None:
        sinks.append(W3CFileSink(settings.w3c_directory))
    writer = LogWriter(
        sinks,
        max_buffer=settings.buffer_records,
        retention=Retention(
            max_age=timedelta(days=settings.retention_days), max_rows=settings.max_records
        ),
    )
    if not settings.enabled:
        writer.submit = _discard  # type: ignore[method-assign]
    return writer


def _discard(record: LogRecord) -> None:
    """``log.enabled = false``: requests are not recorded (measurements only)."""


__all__ = ["UsageError", "serve"]
