"""The workloads of issue 8 and how one cell (a workload on a target) is measured.

A *target* is a proxy (its inspect and tunnel processes) or ``direct`` (no proxy:
curl straight to nginx, the ceiling of the load generator on this machine).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.load import Held, Sample, hold_connections, run_curl, run_newconn
from benchmarks.peers import UPSTREAM_NAME, Mode, ProxyProcess, Upstream, upstream_url
from benchmarks.system import rss_kib, tree_pids

DIRECT = "direct"
KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class RateWorkload:
    """A timed curl run: ``parallel`` transfers at a time of ``path`` from ``block``."""

    key: str
    title: str
    block: Literal["tls", "plain"]
    path: str
    size: int
    parallel: int
    mode: Mode
    unit: Literal["req/s", "MB/s"]
    new_connection: bool = False
    latency: bool = False


RATE_WORKLOADS: tuple[RateWorkload, ...] = (
    RateWorkload("keepalive8", "1. keep-alive inspected HTTPS, 1 KiB, 8 connections",
                 "tls", "/1k.bin", KIB, 8, "inspect", "req/s", latency=True),
    RateWorkload("keepalive64", "1. keep-alive inspected HTTPS, 1 KiB, 64 connections",
                 "tls", "/1k.bin", KIB, 64, "inspect", "req/s", latency=True),
    RateWorkload("newconn", "2. new connection + TLS handshake per request (8 at a time)",
                 "tls", "/1k.bin", KIB, 8, "inspect", "req/s", new_connection=True),
    RateWorkload("bulk", "3. 10 MiB downloads, inspected (4 at a time)",
                 "tls", "/10m.bin", 10 * MIB, 4, "inspect", "MB/s"),
    RateWorkload("tunnel", "4. 10 MiB downloads, tunnel (4 at a time)",
                 "tls", "/10m.bin", 10 * MIB, 4, "tunnel", "MB/s"),
    RateWorkload("plain", "5. plain HTTP keep-alive, 1 KiB, 8 connections",
                 "plain", "/1k.bin", KIB, 8, "inspect", "req/s"),
)  # fmt: skip
RATE_KEYS = tuple(w.key for w in RATE_WORKLOADS)
MEMORY_KEY = "memory"
ALL_KEYS = (*RATE_KEYS, MEMORY_KEY)


@dataclass
class Target:
    """A proxy's running processes by mode, or none at all for ``direct``."""

    name: str
    processes: dict[Mode, ProxyProcess] = field(default_factory=dict)

    @property
    def is_direct(self) -> bool:
        return self.name == DIRECT


def measure_rate(
    workload: RateWorkload, target: Target, upstream: Upstream, test_ca: Path, duration: float
) -> Sample:
    """Run ``workload`` against ``target`` for ``duration`` seconds; ``test_ca`` is the
    CA of nginx's certificate (what a client trusts directly or through a tunnel)."""
    block = upstream.block(workload.block)
    watch = {"nginx": lambda: tree_pids(nginx_pid(upstream))}
    proxy_url = None
    cacert = test_ca if workload.block == "tls" else None
    if not target.is_direct:
        proc = target.processes[workload.mode]
        proxy_url = proc.url
        watch["proxy"] = proc.pids
        if workload.block == "tls":
            cacert = proc.client_ca
    if workload.new_connection:
        return run_newconn(
            (UPSTREAM_NAME, block.port),
            workload.path,
            cacert=cacert or test_ca,
            expect_size=workload.size,
            parallel=workload.parallel,
            duration=duration,
            proxy_port=None if target.is_direct else target.processes[workload.mode].port,
            watch=watch,
        )
    return run_curl(
        upstream_url(upstream, workload.block, workload.path),
        cacert=cacert,
        expect_size=workload.size,
        parallel=workload.parallel,
        duration=duration,
        proxy=proxy_url,
        new_connection=workload.new_connection,
        watch=watch,
    )


def nginx_pid(upstream: Upstream) -> int:
    process = upstream._process  # the peer keeps its master process private
    return process.pid if process is not None else -1


@dataclass
class MemorySample:
    """Idle connections held through one fresh proxy process."""

    mode: Mode
    wanted: int
    opened: int
    failed: int
    kib_per_connection: float
    base_kib: int
    loaded_kib: int
    seconds: float
    timed_out: bool
    errors: list[str]


def measure_memory(
    process: ProxyProcess,
    upstream: Upstream,
    count: int,
    *,
    deadline: float,
    settle: float = 1.0,
) -> MemorySample:
    """RSS delta of ``process``'s tree per idle connection, with ``count`` held open.

    Inspected: CONNECT, TLS with the proxy's CA and one 1 KiB request on each.
    Tunnel: CONNECT and TLS end to end with nginx (verified against the test CA).
    A few connections first warm caches (the minted leaf, helper processes) so the
    delta is the per-connection cost, not one-off start-up.
    """
    block = upstream.block("tls")
    inspect = process.mode == "inspect"

    def hold(n: int, limit: float) -> Held:
        return asyncio.run(
            hold_connections(
                n,
                proxy_port=process.port,
                target=(UPSTREAM_NAME, block.port),
                cacert=process.client_ca,
                request_path="/1k.bin" if inspect else None,
                expect_size=KIB,
                deadline=limit,
            )
        )

    warm = hold(8, 30.0)
    warm.close()
    time.sleep(settle)
    base = rss_kib(process.pids())
    held = hold(count, deadline)
    time.sleep(settle)
    loaded = rss_kib(process.pids())
    opened = len(held.sockets)
    held.close()
    return MemorySample(
        mode=process.mode,
        wanted=count,
        opened=opened,
        failed=held.failed + warm.failed,
        kib_per_connection=(loaded - base) / opened if opened > 0 else 0.0,
        base_kib=base,
        loaded_kib=loaded,
        seconds=held.seconds,
        timed_out=held.timed_out,
        errors=warm.errors + held.errors,
    )
