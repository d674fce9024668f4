"""Queries, retention and follow on both log stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsgate.errors import StoreError, UsageError
from tlsgate.log.database import LogDatabase, PostgresLogSink, SqliteLogSink
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
from tlsgate.log.writer import LogWriter

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogDatabase]:
    store: LogDatabase
    if request.param == "sqlite":
        store = SqliteLogSink(tmp_path / "log.db")
    else:
        store = PostgresLogSink(request.getfixturevalue("fresh_pg_dsn"))
    yield store
    store.close()


def r(name: str, **kw: object) -> LogRecord:
    values: dict[str, object] = dict(
        request_id=name,
        time=NOW,
        client_ip="10.1.2.3",
        client_port=40000,
        dest_host="www.example.com",
        dest_port=443,
        status=200,
        rule="Allow web",
        user="anonymous",
        method="GET",
        protocol="https-inspect",
        url="https://www.example.com/",
    )
    values.update(kw)
    return LogRecord(**values)  # type: ignore[arg-type]


SAMPLE = [
    r("a", time=NOW - timedelta(hours=3)),
    r(
        "b",
        status=12229,
        client_ip="10.1.9.9",
        dest_host="login.microsoftonline.com",
        rule="Anonymous Access To Web",
        action="Denied",
        time=NOW - timedelta(hours=2),
    ),
    r(
        "c",
        status=12202,
        client_ip="192.168.5.1",
        dest_host="Api.Example.com",
        rule="Block social",
        action="Denied",
        time=NOW - timedelta(minutes=30),
    ),
    r(
        "d",
        client_ip="2001:db8::7",
        dest_host="example.com",
        user="alice",
        authenticated=True,
        time=NOW - timedelta(minutes=5),
    ),
    r(
        "e",
        status=502,
        client_ip="10.200.0.1",
        dest_host="notexample.com",
        time=NOW - timedelta(minutes=1),
    ),
    r(
        "f",
        status=10061,
        client_ip="not-an-ip",
        dest_host="deep.api.example.com",
        action="Failed",
        time=NOW,
    ),
]


def ids(records: list[LogRecord]) -> list[str]:
    return [x.request_id for x in records]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (LogQuery(), ["a", "b", "c", "d", "e", "f"]),
        (LogQuery(limit=2), ["e", "f"]),  # the newest two, oldest first
        (LogQuery(status=(12229,)), ["b"]),
        (LogQuery(status=(12229, 12202)), ["b", "c"]),
        (LogQuery(source=parse_source("10.1.0.0/16")), ["a", "b"]),
        (LogQuery(source=parse_source("10.0.0.0/8")), ["a", "b", "e"]),
        (LogQuery(source=parse_source("10.1.9.9")), ["b"]),
        (LogQuery(source=parse_source("2001:db8::/32")), ["d"]),
        (LogQuery(source=parse_source("0.0.0.0/0")), ["a", "b", "c", "e"]),
        (LogQuery(host="www.example.com"), ["a"]),
        (LogQuery(host="api.example.com"), ["c"]),  # case-insensitive
        (LogQuery(host="*.example.com"), ["a", "c", "f"]),  # subdomains only
        (LogQuery(host="*.api.example.com"), ["f"]),
        (LogQuery(rule="Block social"), ["c"]),
        (LogQuery(user="alice"), ["d"]),
        (LogQuery(since=NOW - timedelta(minutes=10)), ["d", "e", "f"]),
        (LogQuery(until=NOW - timedelta(hours=1)), ["a", "b"]),
        (
            LogQuery(since=NOW - timedelta(hours=2, minutes=30), until=NOW - timedelta(minutes=2)),
            ["b", "c", "d"],
        ),
        (LogQuery(request_id="c"), ["c"]),
        (
            LogQuery(
                status=(200,),
                source=parse_source("10.0.0.0/8"),
                since=NOW - timedelta(hours=4),
                rule="Allow web",
            ),
            ["a"],
        ),
        (LogQuery(status=(404,)), []),
    ],
    ids=lambda v: repr(v) if not isinstance(v, LogQuery) else None,
)
def test_filters(db: LogDatabase, query: LogQuery, expected: list[str]) -> None:
    db.write(SAMPLE)
    assert ids(run_query(db, query)) == expected


def test_records_round_trip_through_the_store(db: LogDatabase) -> None:
    rich = r(
        "x",
        time=datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC),
        agent="curl/8.5 ünï",
        authenticated=True,
        bytes_sent=5 * 2**32,
        cache_info=0x40000000,
        inspection="tunnel",
        inspection_reason="server requested a client certificate",
        tls_version="TLSv1.3",
        upstream_cert_subject="CN=x",
    )
    db.write([rich])
    got = find_request(db, "x")
    assert got == rich
    assert find_request(db, "nope") is None


def test_retention_by_age(db: LogDatabase) -> None:
    db.write(SAMPLE)
    deleted = db.prune(max_age=timedelta(hours=1), max_rows=None, now=NOW)
    assert deleted == 2
    assert ids(run_query(db, LogQuery())) == ["c", "d", "e", "f"]


def test_retention_by_count_keeps_the_newest(db: LogDatabase) -> None:
    db.write(SAMPLE)
    db.write([r(f"n{i}") for i in range(4)])
    assert db.prune(max_age=None, max_rows=3) == 7
    assert ids(run_query(db, LogQuery())) == ["n1", "n2", "n3"]
    assert db.count() == 3
    assert db.prune(max_age=timedelta(days=30), max_rows=3) == 0


def test_follow_yields_a_record_written_after_it_started(db: LogDatabase) -> None:
    db.write(SAMPLE)

    async def main() -> list[str]:
        seen: list[str] = []
        writer = LogWriter([db], flush_interval=0.05)
        writer.start()

        async def tail() -> None:
            async for rec in follow(db, LogQuery(status=(12229,)), interval=0.05):
                seen.append(rec.request_id)
                if len(seen) == 2:
                    return

        task = asyncio.create_task(tail())
        await asyncio.sleep(0.2)  # follow has started and seen nothing old
        assert seen == []
        writer.submit(r("new-200"))
        writer.submit(r("new-1", status=12229))
        await writer.flush(timeout=10)
        writer.submit(r("new-2", status=12229))
        await asyncio.wait_for(task, 10)
        await writer.stop()
        return seen

    assert asyncio.run(main()) == ["new-1", "new-2"]


def test_latest_id(db: LogDatabase) -> None:
    assert latest_id(db) == 0
    db.write(SAMPLE)
    assert latest_id(db) >= len(SAMPLE)
    assert ids(run_query(db, LogQuery(), up_to_id=latest_id(db) - 1)) == ["a", "b", "c", "d", "e"]


def test_postgres_outage_raises_store_error_then_recovers(
    postgres: object, fresh_pg_dsn: str
) -> None:
    from tests.peers.postgres import PostgresServer

    assert isinstance(postgres, PostgresServer)
    db = PostgresLogSink(fresh_pg_dsn)
    db.write([r("before")])
    postgres.stop()
    try:
        with pytest.raises(StoreError, match=r"log store postgresql://.*cannot read records"):
            run_query(db, LogQuery())  # the open connection breaks: forgotten, not reused
        with pytest.raises(StoreError, match=r"log store postgresql://.*cannot"):
            db.write([r("during")])
    finally:
        postgres.start()
    db.write([r("after")])
    assert ids(run_query(db, LogQuery())) == ["before", "after"]
    assert "password" not in db.location
    db.close()


def test_parse_since() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("1w", now) == now - timedelta(weeks=1)
    assert parse_since("30s", now) == now - timedelta(seconds=30)
    assert parse_since("2026-11-25T10:00:00Z") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parse_since("2026-11-25 10:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
    with pytest.raises(UsageError, match="'yesterday' is not a time"):
        parse_since("yesterday")


def test_parse_source() -> None:
    assert str(parse_source("10.1.2.3")) == "10.1.2.3/32"
    assert str(parse_source("10.1.2.3/8")) == "10.0.0.0/8"
    assert str(parse_source("2001:db8::1/32")) == "2001:db8::/32"
    with pytest.raises(UsageError, match=r"'10\.0\.0\.0/33' is not an IP address or network"):
        parse_source("10.0.0.0/33")
