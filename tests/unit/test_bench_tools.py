"""The benchmark tools beside the harness: benchmarks.instructions reads valgrind's
per-process counts (the proxy and its log daemon, not the shells around them);
benchmarks.log_member and benchmarks.http1_layer run the real code they measure."""

from __future__ import annotations

from benchmarks.instructions import instructions_by_role

VALGRIND_LOG = """\
==101== Cachegrind, a high-precision tracing profiler
==101== Command: /usr/bin/python3 -m benchmarks.cpu_per_request --requests 10 --log daemon
==101==
==205== Command: /usr/bin/python3 -m tlsgate.log.daemon /tmp/w/log.db
==205==
==300== Command: /bin/sh -c true
==205== I   refs:      1,018,540,908
==300== I   refs:      1,234
==101== I   refs:      4,443,372,041
"""


def test_counts_per_role() -> None:
    assert instructions_by_role(VALGRIND_LOG) == {
        "proxy": 4_443_372_041,
        "log daemon": 1_018_540_908,
    }


def test_no_counts_when_valgrind_printed_none() -> None:
    assert instructions_by_role("==1== Command: python -m benchmarks.cpu_per_request\n") == {}


def test_log_member_variants_run_and_on_stores_every_record(tmp_path) -> None:
    """benchmarks.log_member: each variant runs; ``on`` is the real path (its records
    reach the log), the others never reach the database."""
    import asyncio

    from benchmarks.log_member import VARIANTS, run

    from tlsgate.log.database import SqliteLogSink

    for variant in VARIANTS:
        assert asyncio.run(run(variant, 50, tmp_path)) >= 0
        db = SqliteLogSink(tmp_path / f"{variant}.db")
        assert db.count() == (50 if variant == "on" else 0)
        db.close()



def test_http1_layer_proxies_one_request() -> None:
    """benchmarks.http1_layer does the proxy's real HTTP/1 work: the client's head carries
    the server's fields, tlsgate's Via and the framing."""
    from benchmarks.http1_layer import one_request

    from tlsgate.config.model import Limits
    from tlsgate.http1.reader import RequestReader

    limits = Limits()
    requests = RequestReader(limits, in_tunnel=True)
    for _ in range(3):  # one reader for the connection, as in the proxy
        head = one_request(requests, limits)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: 1024\r\n" in head and b"\r\nVia: 1.1 " in head
