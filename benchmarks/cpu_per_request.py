"""Benchmark: tlsgate's own CPU time per keep-alive request, in one process.

The side-by-side harness (``python -m benchmarks.run``) measures rates with the proxy,
nginx and curl sharing the cores.  To weigh one change to the hot path, what matters is
the proxy's CPU per request, which varies far less.  This runs tlsgate's proxy in this
process (the real ``Runtime`` and listener, no log daemon unless ``--log daemon``), an
nginx from the test peers, and ``curl --parallel`` through the proxy, then prints the
CPU time of this process per request for each round and the best one.  Compare two
versions by running each in turn, interleaved, a few times: the spread is ~±5 us.

    python -m benchmarks.cpu_per_request [--requests 20000] [--rounds 3] [--plain]
                                         [--log off|daemon]

Every response is checked (status 200 and 1,024 bytes) and failures are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.peers.inprocess import start_proxy
from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI

from tlsgate import eventloop
from tlsgate.log.daemon import LogDaemonSink
from tlsgate.log.record import LogRecord
from tlsgate.log.writer import LogWriter
from tlsgate.member import tune_gc
from tlsgate.proxy.runtime import RecordSink
from tlsgate.proxy.server import Listening


class _NoLog:
    def submit(self, record: LogRecord) -> None:
        pass


@contextmanager
def peers(work: Path, *, big_files: bool = False) -> Iterator[tuple[TestPKI, NginxServer]]:
    """The test PKI and an nginx with a TLS and a plain block serving ``/1k.bin`` (and
    ``/10m.bin`` with ``big_files``)."""
    pki = TestPKI(work / "pki")
    nginx = NginxServer(work / "nginx", client_ca=pki.ca_cert, big_files=big_files)
    nginx.add_server("tls", tls=pki.preset("valid"), protocols=("TLSv1.2", "TLSv1.3"))
    nginx.add_server("plain")
    nginx.start()
    try:
        yield pki, nginx
    finally:
        nginx.stop()


def url_file(work: Path, url: str, requests: int) -> Path:
    """A curl config asking for ``url`` ``requests`` times."""
    urls = work / "urls.cfg"
    urls.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * requests)
    return urls


async def curl_round(
    proxy_port: int, ca_cert: Path, urls: Path, *, parallel: int = 8, size: int = 1024
) -> int:
    """One ``curl --parallel-max PARALLEL`` pass through the proxy; the failed responses
    (not status 200 with ``size`` bytes)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--parallel", "--parallel-max", str(parallel),
        "-x", f"http://127.0.0.1:{proxy_port}", "--cacert", str(ca_cert),
        "-w", "%{http_code} %{size_download}\n", "-K", str(urls),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return sum(1 for line in out.decode().splitlines() if line != f"200 {size}")


async def cpu_rounds(
    proxy_port: int, ca_cert: Path, urls: Path, requests: int, rounds: int
) -> tuple[float, int]:
    """A warm-up pass (handshakes, pool, caches), then ``rounds`` measured ones, each
    printed; the least CPU time of this process per request (us) and all failures."""
    failed = await curl_round(proxy_port, ca_cert, urls)
    best = float("inf")
    for n in range(1, rounds + 1):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        bad = await curl_round(proxy_port, ca_cert, urls)
        cpu = (time.process_time() - cpu0) / requests * 1e6
        rate = requests / (time.perf_counter() - wall0)
        best, failed = min(best, cpu), failed + bad
        print(f"round {n}: {cpu:.1f} us of CPU per request, {rate:,.0f} req/s, {bad} failed")
    return best, failed


async def start_tlsgate(
    work: Path, nginx: NginxServer, pki: TestPKI, *, plain: bool, log: str
) -> tuple[Listening, Path, LogWriter | None]:
    """tlsgate's proxy in this process, allowed to reach ``nginx``: its listener, its
    CA certificate and its log writer (``log="daemon"``) or None (no log).  The garbage
    collector is tuned as ``tlsgate serve`` tunes it."""
    tune_gc()
    port = nginx.port("plain" if plain else "tls")
    writer: LogWriter | None = None
    sink: RecordSink = _NoLog()
    if log == "daemon":
        work.mkdir(parents=True, exist_ok=True)
        daemon = LogDaemonSink(work / "log.db")
        daemon.start()
        writer = LogWriter([daemon])
        writer.start()
        sink = writer
    _, server, ca_cert = await start_proxy(work / "home", pki.ca_cert, [port], sink, member="bench")
    return server, ca_cert, writer


async def _measure(args: argparse.Namespace, work: Path, nginx: NginxServer, pki: TestPKI) -> None:
    server, ca_cert, writer = await start_tlsgate(work, nginx, pki, plain=args.plain, log=args.log)
    scheme = "http" if args.plain else "https"
    port = nginx.port("plain" if args.plain else "tls")
    urls = url_file(work, f"{scheme}://localhost:{port}/1k.bin", args.requests)
    proxy_port = server.sockets[0].getsockname()[1]
    best, _ = await cpu_rounds(proxy_port, ca_cert, urls, args.requests, args.rounds)
    print(f"best: {best:.1f} us per request ({scheme}, log {args.log})")
    server.close()
    if writer is not None:
        await writer.stop()


def rounds_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--requests`` and ``--rounds`` (the tools here share them)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per round (20000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=eventloop.CHOICES, default="auto", help="(auto)")
    return parser


Measure = Callable[[argparse.Namespace, Path, NginxServer, TestPKI], Coroutine[Any, Any, None]]


def run_measure(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    measure: Measure,
    prefix: str,
    *,
    big_files: bool = False,
) -> int:
    """Check the rounds, then ``measure`` with the peers running in a temporary directory."""
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        with peers(work, big_files=big_files) as (pki, nginx):
            eventloop.run(eventloop.choose(args.loop), measure(args, work, nginx, pki))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = rounds_parser(__doc__)
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of inspected")
    parser.add_argument("--log", choices=["off", "daemon"], default="off")
    return run_measure(parser, parser.parse_args(argv), _measure, "tlsgate-cpu-")


if __name__ == "__main__":
    sys.exit(main())
