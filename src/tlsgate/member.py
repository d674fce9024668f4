"""One ``tlsgate serve`` member from start to stop.

Start: the home directory and CA, the configuration (the store's newest revision; a
``--config FILE`` becomes a new revision first when it differs), the Web Proxy log, the
listener, the follower that keeps the configuration live.  Stop (SIGTERM/SIGINT): no
new connections, requests in flight finish within ``timeouts.shutdown_grace``, the log
is flushed, the member leaves the store's member list.
"""

from __future__ import annotations

import asyncio
import gc
import getpass
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tlsgate import __version__, build, eventloop, malloc
from tlsgate.config.home import Home
from tlsgate.config.loader import load_config_file
from tlsgate.config.model import TlsgateConfig, UpstreamSettings
from tlsgate.errors import ConfigError, StoreError
from tlsgate.log.daemon import LogDaemonSink
from tlsgate.log.sinks import LOG_DB_NAME, AnyLogSink, W3CFileSink, is_postgres_url, open_log_sink
from tlsgate.log.writer import DiscardingLogWriter, LogWriter, Retention
from tlsgate.proxy.runtime import Runtime
from tlsgate.proxy.server import Listen, Listening, serve_until_stopped
from tlsgate.store.follower import ConfigFollower, MemberInfo
from tlsgate.store.store import LearnedException, open_store
from tlsgate.tls.ca import LeafMinter, load_or_create_ca
from tlsgate.workers import Workers

if TYPE_CHECKING:
    from tlsgate.admin.server import AdminServer

log = logging.getLogger("tlsgate")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    home: Home
    listen: Listen
    member: str
    store_url: str | None = None
    config_file: Path | None = None
    upstream_ca: Path | None = None
    no_inspect: bool = False
    admin: Listen | None = None
    """Admin console and API address (None: no console)."""
    admin_required: bool = False
    """The address was asked for: failing to listen there stops the member."""
    admin_tls: bool = False
    """Serve the console over HTTPS with a certificate from tlsgate's CA."""
    workers: int = 1
    """Processes accepting on ``listen`` (this one included); see workers.py."""
    worker_command: tuple[str, ...] = ()
    """``tlsgate`` arguments a worker is started with (``--listen`` is added)."""
    worker_index: int = 0
    """Set in a worker process (2…N): share the port, start no workers."""
    malloc: str = "tuned"
    """``--malloc``: keep freed memory for reuse (malloc.py) or leave glibc as it is."""


DEFAULT_ADMIN = Listen("127.0.0.1", 8081)


def author() -> str:
    try:
        user = os.environ.get("TLSGATE_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _Live:
    """Receives configurations and learned exceptions from the follower."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.first: tuple[int, TlsgateConfig] | None = None

    def on_config(self, number: int, config: TlsgateConfig) -> None:
        if self.runtime is None:
            self.first = (number, config)
        else:
            self.runtime.set_config(config, number)  # raises ConfigError: follower reports it

    def on_learned(self, entries: list[LearnedException]) -> None:
        if self.runtime is not None:
            self.runtime.learned.replace_all(entries)


class _LearnedToStore:
    """Learned exceptions go to the store (shared by all members) when it is reachable."""

    def __init__(self, follower: ConfigFollower) -> None:
        self.follower = follower

    def learn(self, host: str, port: int, reason: str, ttl_seconds: float) -> None:
        store = self.follower.store
        if store is None:
            log.warning("store unreachable: %s:%d is learned on this member only", host, port)
            return
        store.learn(host, port, reason, ttl_seconds)


def _log_writer(config: TlsgateConfig, home: Home, store_url: str | None) -> LogWriter:
    settings = config.log
    main: AnyLogSink = (
        open_log_sink(store_url, home)
        if is_postgres_url(store_url)
        else LogDaemonSink(home.root / LOG_DB_NAME)
    )
    if isinstance(main, LogDaemonSink):
        main.start()
    sinks: list[AnyLogSink] = [main]
    if settings.w3c_directory is not None:
        sinks.append(W3CFileSink(settings.w3c_directory))
    return (LogWriter if settings.enabled else DiscardingLogWriter)(
        sinks,
        max_buffer=settings.buffer_records,
        retention=Retention(
            max_age=timedelta(days=settings.retention_days), max_rows=settings.max_records
        ),
    )


async def _seed_from_file(opts: ServeOptions, file_config: TlsgateConfig) -> None:
    """``--config FILE`` becomes the applied configuration (a new revision if it differs)."""

    def seed() -> None:
        store = open_store(opts.store_url, opts.home)
        try:
            rev = store.apply_document(
                file_config.model_dump(mode="json"),
                f"serve --config {opts.config_file}",
                author(),
                only_if_different=True,
            )
            log.info("configuration from %s is revision %d", opts.config_file, rev.number)
        finally:
            store.close()

    try:
        await asyncio.to_thread(seed)
    except StoreError as exc:
        log.warning("%s; running on %s until the store is back", exc.one_line(), opts.config_file)


async def _start_admin(opts: ServeOptions, home: Home, runtime: Runtime) -> AdminServer | None:
    """The admin console next to the proxy; its address is one the proxy refuses to reach."""
    if opts.admin is None:
        return None
    from tlsgate.admin.server import AdminServer  # the web stack loads only when used
    from tlsgate.admin.tls import ConsoleCertificates

    certificates = (
        ConsoleCertificates(runtime.minter.ca, home, opts.admin.host) if opts.admin_tls else None
    )
    try:
        admin = AdminServer(home, opts.store_url, opts.admin, certificates=certificates)
    except ConfigError as exc:
        if opts.admin_required:
            raise
        log.warning("%s; running without the admin console", exc.message)
        return None
    await admin.start()
    runtime.add_listener(admin.address)
    return admin


GC_YOUNG_THRESHOLD: Final = 10_000
"""The garbage collector's young-generation threshold while serving (Python's default is
700).  Web Proxy log records live until their batch is flushed (up to a second), so at
700 each is scanned by a few young collections first; counted with valgrind
(BENCHMARKS.md): ~4,000 instructions per record with the log on, and per request 424.5k
-> 418.7k with the log, 395.9k -> 393.5k without.  Cycles are still collected, after
10,000 net new container objects instead of 700."""


def tune_gc() -> None:
    """Set :data:`GC_YOUNG_THRESHOLD`, keeping the older generations' thresholds."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def run_member(opts: ServeOptions) -> None:
    tune_gc()
    allocator = malloc.tune(opts.malloc)
    home = opts.home.ensure()
    ca = load_or_create_ca(home)
    file_config = load_config_file(opts.config_file) if opts.config_file else None
    if file_config is not None:
        await _seed_from_file(opts, file_config)

    live = _Live()
    follower = ConfigFollower(
        lambda: open_store(opts.store_url, home),
        MemberInfo(opts.member, str(opts.listen), __version__),
        live.on_config,
        live.on_learned,
        store_url=opts.store_url,
        cache_file=home.root / "applied-revision.json",
    )
    try:
        await follower.start()
    except StoreError:
        if file_config is None:
            raise
        live.first = (0, file_config)
        follower.start_retrying()
    assert live.first is not None
    revision, config = live.first

    upstream = None
    if opts.upstream_ca is not None:
        upstream = UpstreamSettings(
            ca_file=opts.upstream_ca.resolve(), use_system_trust=config.upstream.use_system_trust
        )
    writer = _log_writer(config, home, opts.store_url)
    writer.start()
    runtime = Runtime(
        config=config,
        minter=LeafMinter(ca, home),
        log=writer,
        member=opts.member,
        inspect_override=False if opts.no_inspect else None,
        upstream_ca_override=upstream,
        learned_store=_LearnedToStore(follower),
    )
    runtime.revision = revision
    live.runtime = runtime

    async def started(server: Listening) -> None:
        if stale := build.stale():
            log.warning("%s", build.stale_message(stale))
        mode = "inspection on" if runtime.inspection_enabled else "inspection off"
        log.info(
            "tlsgate %s (%s, %s, %s, %s) member %s listening on %s (%s), "
            "configuration revision %d; CA %s; home %s; pid %d",
            __version__,
            build.describe(),
            build.interpreter(),
            eventloop.running().describe(),
            allocator,
            opts.member,
            opts.listen,
            mode,
            revision,
            home.ca_cert,
            home.root,
            os.getpid(),
        )

    workers: Workers | None = None

    async def start_workers(server: Listening) -> None:
        nonlocal workers
        await started(server)
        if opts.workers > 1:
            # The port the first process got (``--listen HOST:0`` picks one).
            listen = str(Listen(opts.listen.host, server.sockets[0].getsockname()[1]))
            env = dict(os.environ)
            if opts.store_url:
                env["TLSGATE_STORE"] = opts.store_url
            workers = Workers(opts.workers, [*opts.worker_command, "--listen", listen], env)
            await workers.start()

    admin: AdminServer | None = None
    try:
        admin = await _start_admin(opts, home, runtime)
        await serve_until_stopped(
            runtime,
            opts.listen,
            on_started=start_workers,
            on_stopping=lambda: workers.signal_stop() if workers is not None else None,
            reuse_port=opts.workers > 1 or opts.worker_index > 0,
        )
    finally:
        if workers is not None:
            await workers.stop(config.timeouts.shutdown_grace + 15)
        if admin is not None:
            await admin.stop()
        await follower.stop()
        await writer.stop()
    log.info("stopped at %s", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
