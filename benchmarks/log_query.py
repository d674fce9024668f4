"""Benchmark: query times over a SQLite Web Proxy log of 1,000,000 records.

Fills ``log.db`` (in a temporary directory, or ``--db PATH`` to keep it) with synthetic
records through the real sink's schema and insert path, then times the queries
``tlsgate log`` runs most, printing a markdown table.  Run:

    python benchmarks/log_query.py [--records 1000000] [--db PATH] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tlsgate.log.database import SqliteLogSink
from tlsgate.log.query import LogQuery, parse_since, parse_source, run_query
from tlsgate.log.record import LogRecord

HOSTS = [f"www{i}.example{i % 50}.com" for i in range(500)] + [
    "login.microsoftonline.com",
    "graph.microsoft.com",
    "updates.example.org",
]
STATUSES = [200] * 80 + [304] * 8 + [404] * 5 + [502, 12229, 12202, 10061, 11001, 12226, 403, 500]
RULES = ["Allow web", "Allow web", "Allow web", "Block social", "Anonymous Access To Web"]


def synthetic(
    n: int, start: datetime, span: timedelta, seed: int = 7, base: int = 0
) -> list[LogRecord]:
    rnd = random.Random(seed)
    step = span / n
    out = []
    for i in range(n):
        status = rnd.choice(STATUSES)
        host = rnd.choice(HOSTS)
        https = rnd.random() < 0.7
        out.append(
            LogRecord(
                request_id=f"{base + i:016x}",
                time=start + step * i,
                member="gw1",
                client_ip=f"10.{rnd.randrange(4)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                client_port=rnd.randrange(1024, 65535),
                user="anonymous",
                agent="Mozilla/5.0 (X11; Linux x86_64)",
                dest_host=host,
                dest_ip=f"192.0.2.{rnd.randrange(1, 255)}",
                dest_port=443 if https else 80,
                time_taken_ms=rnd.randrange(1, 2000),
                bytes_sent=rnd.randrange(200, 200_000),
                bytes_received=rnd.randrange(100, 2_000),
                protocol="https-inspect" if https else "http",
                method="GET",
                url=f"{'https' if https else 'http'}://{host}/path/{i % 1000}",
                mime_type="text/html",
                object_source=4 if status < 1000 else 0,
                status=status,
                rule=rnd.choice(RULES),
                source_network="Internal",
                dest_network="External",
                action="Allowed" if status < 400 else ("Denied" if status == 12202 else "Failed"),
                inspection="inspect" if https else "none",
            )
        )
    return out


def fill(sink: SqliteLogSink, total: int, batch: int = 50_000) -> float:
    now = datetime.now(UTC)
    span = timedelta(days=7)
    start = now - span
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(batch, total - done)
        records = synthetic(n, start + span * done / total, span * n / total, seed=done, base=done)
        sink.write(records)
        done += n
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, int]:
    times = []
    result: object = None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(result) if isinstance(result, list) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "log.db"
        sink = SqliteLogSink(path)
        have = sink.count()
        if have < args.records:
            secs = fill(sink, args.records - have)
            print(
                f"filled {args.records - have:,} records in {secs:.1f} s "
                f"({(args.records - have) / secs:,.0f} records/s)\n",
                file=sys.stderr,
            )
        sink.close()  # PRAGMA optimize, as the writer does on shutdown
        sink = SqliteLogSink(path)
        total = sink.count()
        queries: list[tuple[str, LogQuery]] = [
            ("latest 100 (no filter)", LogQuery(limit=100)),
            ("--status 12229", LogQuery(status=(12229,))),
            ("--status 200", LogQuery(status=(200,))),
            ("--status 502 --status 504", LogQuery(status=(502, 504))),
            ("--source 10.1.0.0/16", LogQuery(source=parse_source("10.1.0.0/16"))),
            ("--source 10.0.0.0/8", LogQuery(source=parse_source("10.0.0.0/8"))),
            ("--source 10.2.3.4", LogQuery(source=parse_source("10.2.3.4"))),
            ("--host login.microsoftonline.com", LogQuery(host="login.microsoftonline.com")),
            ("--host *.example7.com", LogQuery(host="*.example7.com")),
            ("--since 10m", LogQuery(since=parse_since("10m"), limit=None)),
            ("--since 10m --limit 100", LogQuery(since=parse_since("10m"))),
            ("--rule 'Block social'", LogQuery(rule="Block social")),
            ("--user anonymous --status 404", LogQuery(user="anonymous", status=(404,))),
            (
                "--status 12229 --source 10.0.0.0/8 --since 1d",
                LogQuery(
                    status=(12229,), source=parse_source("10.0.0.0/8"), since=parse_since("1d")
                ),
            ),
            ("request id (log show)", LogQuery(request_id=f"{total // 2:016x}", limit=1)),
        ]
        print(f"SQLite log with {total:,} records; median of {args.rounds} runs.\n")
        print("| query | rows | time (ms) |")
        print("|---|---:|---:|")
        for label, q in queries:
            secs, rows = timed(lambda q=q: run_query(sink, q), args.rounds)  # type: ignore[misc]
            print(f"| `{label}` | {rows:,} | {secs * 1000:.1f} |")
        sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
