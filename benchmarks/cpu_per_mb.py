"""Benchmark: tlsgate's own CPU time and page faults per MB of inspected bulk, in one
process.

Like ``benchmarks.cpu_per_request`` for keep-alive requests: tlsgate's proxy runs in
this process, nginx serves ``/10m.bin`` over TLS, and ``curl --parallel-max 4``
downloads it through the proxy (inspected), ``--requests`` times per round.  Printed
per round: this process's CPU time per MB, the rate, and its minor page faults per MB
(a fault costs ~2.7 us on the benchmark machine, so a buffer that lands on fresh pages
each time shows here first).  ``--malloc default`` leaves glibc's allocator as it is
(``serve --malloc``, src/tlsgate/malloc.py); compare by running each in turn, a few
times: the spread on a shared machine is ~±10 %.

    python -m benchmarks.cpu_per_mb [--requests 40] [--rounds 3] [--malloc tuned|default]

Every response is checked (status 200 and 10 MiB) and failures are counted.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from tests.peers.nginx import BIG_FILE_SIZES, NginxServer
from tests.peers.pki import TestPKI

from benchmarks.cpu_per_request import (
    curl_round,
    rounds_parser,
    run_measure,
    start_tlsgate,
    url_file,
)
from tlsgate import malloc

SIZE = BIG_FILE_SIZES["/10m.bin"]


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


async def _measure(args: argparse.Namespace, work: Path, nginx: NginxServer, pki: TestPKI) -> None:
    print(malloc.tune(args.malloc))
    server, ca_cert, _ = await start_tlsgate(work, nginx, pki, plain=False, log="off")
    urls = url_file(work, f"https://localhost:{nginx.port('tls')}/10m.bin", args.requests)
    proxy_port = server.sockets[0].getsockname()[1]
    failed = await curl_round(proxy_port, ca_cert, urls, parallel=4, size=SIZE)  # warm-up
    mb = args.requests * SIZE / 1e6
    best = float("inf")
    for n in range(1, args.rounds + 1):
        cpu0, wall0, faults0 = time.process_time(), time.perf_counter(), _faults()
        bad = await curl_round(proxy_port, ca_cert, urls, parallel=4, size=SIZE)
        cpu = (time.process_time() - cpu0) / mb * 1e3
        rate = mb / (time.perf_counter() - wall0)
        faults = (_faults() - faults0) / mb
        best, failed = min(best, cpu), failed + bad
        print(f"round {n}: {cpu:.2f} ms of CPU per MB, {rate:,.0f} MB/s, "
              f"{faults:,.0f} page faults per MB, {bad} failed")  # fmt: skip
    print(f"best: {best:.2f} ms per MB (inspected, malloc {args.malloc}), {failed} failed")
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = rounds_parser(__doc__)
    parser.set_defaults(requests=40)
    parser.add_argument("--malloc", choices=malloc.CHOICES, default="tuned", help="(tuned)")
    args = parser.parse_args(argv)
    return run_measure(parser, args, _measure, "tlsgate-cpu-mb-", big_files=True)


if __name__ == "__main__":
    raise SystemExit(main())
