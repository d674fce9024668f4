"""Benchmark: what the Web Proxy log costs the member (the proxy process), per record.

Records are made and filled as the proxy fills them for an inspected keep-alive request,
then, by variant:

* ``off``: dropped (``[log] enabled = false``);
* ``keep``: submitted to the real :class:`~tlsgate.log.writer.LogWriter`, whose sink
  does nothing (the cost of holding records until a flush);
* ``wire``: the sink converts each batch (``to_wire``);
* ``dumps``: the sink converts and marshals each batch;
* ``on``: the real :class:`~tlsgate.log.daemon.LogDaemonSink` (the frame goes down the
  pipe to a real log daemon, whose work is not counted here).

Prints this process's CPU time per record for each variant (subtract ``off`` for the
log's share).  For counts that other tenants of the machine cannot move, run one variant
under valgrind with two sizes and take the difference (BENCHMARKS.md does)::

    python -m benchmarks.log_member [--records 30000] [--variant on]
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        python -m benchmarks.log_member --variant on --records 10000
"""

from __future__ import annotations

import argparse
import asyncio
import marshal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tlsgate.log.daemon import LogDaemonSink
from tlsgate.log.record import LogRecord, to_wire
from tlsgate.log.writer import LogWriter
from tlsgate.member import tune_gc

VARIANTS = ("off", "keep", "wire", "dumps", "on")


def filled(i: int) -> LogRecord:
    """A record as the proxy leaves it after an inspected keep-alive request."""
    r = LogRecord()
    r.member, r.client_ip, r.client_port = "box", "127.0.0.1", 40000 + (i & 1023)
    r.dest_host, r.dest_ip, r.dest_port = "localhost", "127.0.0.1", 8443
    r.url, r.method, r.protocol = "https://localhost:8443/1k.bin", "GET", "https-inspect"
    r.mime_type, r.status, r.rule = "application/octet-stream", 200, "Allow web"
    r.inspection, r.inspection_reason, r.tls_version = "inspect", "default", "TLSv1.3"
    r.upstream_cert_subject, r.agent = "CN=localhost", "curl/7.88.1"
    r.source_network, r.dest_network = "Internal", "External"
    r.bytes_sent, r.bytes_received, r.time_taken_ms, r.object_source = 1300, 90, 1, 4
    return r


async def _keep(records: Sequence[LogRecord]) -> None:
    pass


async def _wire(records: Sequence[LogRecord]) -> None:
    to_wire(records)


async def _dumps(records: Sequence[LogRecord]) -> None:
    marshal.dumps(to_wire(records))


_SINK_WRITES: dict[str, Callable[[Sequence[LogRecord]], object]] = {
    "keep": _keep,
    "wire": _wire,
    "dumps": _dumps,
}


async def run(variant: str, records: int, work: Path) -> float:
    """CPU seconds of this process for ``records`` records through ``variant``."""
    sink = LogDaemonSink(work / f"{variant}.db")
    sink.start()
    if variant in _SINK_WRITES:
        sink.write = _SINK_WRITES[variant]  # type: ignore[method-assign,assignment]
    writer = LogWriter([sink], retention=None)
    writer.start()
    submit: Callable[[LogRecord], None] = (lambda r: None) if variant == "off" else writer.submit
    cpu0 = time.process_time()
    for i in range(records):
        submit(filled(i))
        if i % 8 == 7:
            await asyncio.sleep(0)  # the loop turns between requests, as in the proxy
    await writer.flush()
    cpu = time.process_time() - cpu0
    await writer.stop()
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.log_member", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--variant", choices=VARIANTS, action="append",
                        help="one or more (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.records < 1:
        parser.error("--records must be at least 1")
    tune_gc()  # as tlsgate serve runs
    with tempfile.TemporaryDirectory() as d:
        for variant in args.variant or VARIANTS:
            cpu = asyncio.run(run(variant, args.records, Path(d)))
            print(f"{variant:>5}: {cpu / args.records * 1e6:.2f} us of CPU per record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
