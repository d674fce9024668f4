"""Searching the log: filters, their SQL, ``--since`` parsing, and following new records.

:class:`LogQuery` is a value; :func:`run_query` turns it into one SQL statement that
both backends answer with index range scans (see :mod:`tlsgate.log.database` for the
derived ``client_ip_key`` and ``dest_host_rev`` columns).  Results are the newest
``limit`` matches, returned oldest first, like ``tail``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tlsgate.errors import UsageError
from tlsgate.log.database import TABLE, LogDatabase, network_key_range, reverse_host
from tlsgate.log.record import LogRecord

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Filters of ``tlsgate log``; every given filter must match (AND)."""

    status: tuple[int, ...] = ()
    """Any of these statuses (HTTP or catalogue codes)."""
    source: Network | None = None
    """Client address inside this network (a single IP is a /32 or /128)."""
    host: str | None = None
    """Destination host, exact (case-insensitive) or ``*.example.com`` for subdomains."""
    rule: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    limit: int | None = 100


_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``/``2h``/``3d``/``1w``/``30s`` ago, or an ISO 8601 time (naive = UTC)."""
    m = _DURATION.match(text)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"'{text}' is not a time: use a duration such as 10m, 2h, 3d or an ISO time "
            "such as 2026-11-25T10:00:00Z"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_source(text: str) -> Network:
    """An IP address or a CIDR network (``10.0.0.0/8``, ``2001:db8::/32``)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise UsageError(
            f"'{text}' is not an IP address or network: use e.g. 10.1.2.3 or 10.0.0.0/8"
        ) from None


def where(q: LogQuery, db: LogDatabase) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and its parameters for ``db``'s dialect."""
    p = db.placeholder
    clauses: list[str] = []
    params: list[Any] = []
    if q.request_id is not None:
        clauses.append(f"request_id = {p}")
        params.append(q.request_id)
    if q.status:
        clauses.append(f"status IN ({', '.join([p] * len(q.status))})")
        params.extend(q.status)
    if q.source is not None:
        first, last = network_key_range(q.source)
        if first == last:
            clauses.append(f"client_ip_key = {p}")
            params.append(first)
        else:
            clauses.append(f"client_ip_key BETWEEN {p} AND {p}")
            params.extend((first, last))
    if q.host:
        host = q.host.strip().rstrip(".")
        if host.startswith("*."):
            # Subdomains of the suffix: a prefix range over the reversed name.
            prefix = reverse_host(host[1:])
            clauses.append(f"dest_host_rev >= {p} AND dest_host_rev < {p}")
            params.extend((prefix, prefix[:-1] + "/"))  # '/' sorts right after '.'
        else:
            clauses.append(f"dest_host_rev = {p}")
            params.append(reverse_host(host))
    if q.rule is not None:
        clauses.append(f"rule = {p}")
        params.append(q.rule)
    if q.user is not None:
        clauses.append(f"user_name = {p}")
        params.append(q.user)
    if q.since is not None:
        clauses.append(f"time >= {p}")
        params.append(db.time_param(q.since))
    if q.until is not None:
        clauses.append(f"time <= {p}")
        params.append(db.time_param(q.until))
    return " AND ".join(clauses), params


def run_query(db: LogDatabase, q: LogQuery, *, up_to_id: int | None = None) -> list[LogRecord]:
    """The newest ``q.limit`` matching records, oldest first."""
    return [rec for _, rec in query_rows(db, q, up_to_id=up_to_id)]


def query_rows(
    db: LogDatabase, q: LogQuery, *, up_to_id: int | None = None
) -> list[tuple[int, LogRecord]]:
    """Like :func:`run_query`, with each record's row id."""
    sql, params = where(q, db)
    if up_to_id is not None:
        sql = f"{sql} AND id <= {db.placeholder}" if sql else f"id <= {db.placeholder}"
        params.append(up_to_id)
    rows = db.select(sql, params, newest_first=True, limit=q.limit)
    rows.reverse()
    return rows


def find_request(db: LogDatabase, request_id: str) -> LogRecord | None:
    """The record with this request id (the newest, should ids ever repeat)."""
    rows = db.select(f"request_id = {db.placeholder}", [request_id], newest_first=True, limit=1)
    return rows[0][1] if rows else None


def latest_id(db: LogDatabase) -> int:
    """The highest row id so far (0 for an empty log): where ``follow`` starts."""
    rows = db.execute_select(f"SELECT max(id) FROM {TABLE}", ())
    return int(rows[0][0] or 0)


async def follow(
    db: LogDatabase, q: LogQuery, *, after_id: int | None = None, interval: float = 0.3
) -> AsyncIterator[LogRecord]:
    """Yield records matching ``q`` (ignoring its limit) as they are stored.

    Polls for rows with an id above the last one seen every ``interval`` seconds;
    starts after ``after_id`` (default: the newest record when called).
    """
    last = await asyncio.to_thread(latest_id, db) if after_id is None else after_id
    sql, params = where(q, db)
    p = db.placeholder
    sql = f"{sql} AND id > {p}" if sql else f"id > {p}"
    while True:
        rows = await asyncio.to_thread(
            db.select, sql, [*params, last], newest_first=False, limit=1000
        )
        for row_id, rec in rows:
            last = row_id
            yield rec
        if len(rows) < 1000:
            await asyncio.sleep(interval)
