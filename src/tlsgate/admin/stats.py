"""Dashboard figures from the Web Proxy log: requests and bytes per minute, inspected /
tunnelled / denied counts, top denied rules and statuses, recent client-certificate
tunnels.

:func:`summarise` is pure (records in, figures out); :func:`dashboard_stats` reads the
newest records of the last ``minutes`` through :mod:`tlsgate.log.query`, so both log
backends answer the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from tlsgate.log.database import LogDatabase
from tlsgate.log.query import LogQuery, run_query
from tlsgate.log.record import LogRecord
from tlsgate.policy.inspection import CLIENT_CERT_REASON

MAX_RECORDS = 50_000
"""Upper bound of records read per dashboard refresh (the newest ones win)."""


def _minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def summarise(records: Iterable[LogRecord], *, now: datetime, minutes: int) -> dict[str, Any]:
    start = _minute(now) - timedelta(minutes=minutes - 1)
    buckets = [start + timedelta(minutes=i) for i in range(minutes)]
    index = {b: i for i, b in enumerate(buckets)}
    requests = [0] * minutes
    bytes_total = [0] * minutes
    inspected = [0] * minutes
    tunnelled = [0] * minutes
    denied = [0] * minutes
    denied_rules: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    cert_tunnels: list[dict[str, Any]] = []
    for r in records:
        i = index.get(_minute(r.time))
        if i is None:
            continue
        requests[i] += 1
        bytes_total[i] += r.bytes_sent + r.bytes_received
        if r.action == "Denied":
            denied[i] += 1
            denied_rules[r.rule or "(none)"] += 1
        elif r.inspection == "inspect":
            inspected[i] += 1
        elif r.inspection == "tunnel":
            tunnelled[i] += 1
        statuses[r.status] += 1
        if r.inspection == "tunnel" and r.inspection_reason.startswith(CLIENT_CERT_REASON):
            cert_tunnels.append(
                {
                    "time": r.time.isoformat(),
                    "request_id": r.request_id,
                    "client_ip": r.client_ip,
                    "destination": f"{r.dest_host}:{r.dest_port}",
                    "member": r.member,
                }
            )
    return {
        "minutes": [b.strftime("%H:%M") for b in buckets],
        "requests": requests,
        "bytes": bytes_total,
        "inspected": inspected,
        "tunnelled": tunnelled,
        "denied": denied,
        "totals": {
            "requests": sum(requests),
            "bytes": sum(bytes_total),
            "inspected": sum(inspected),
            "tunnelled": sum(tunnelled),
            "denied": sum(denied),
        },
        "top_denied_rules": [{"rule": k, "count": v} for k, v in denied_rules.most_common(5)],
        "top_statuses": [{"status": k, "count": v} for k, v in statuses.most_common(8)],
        "client_certificate_tunnels": list(reversed(cert_tunnels))[:10],
    }


def dashboard_stats(
    db: LogDatabase, minutes: int = 60, now: datetime | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = _minute(now) - timedelta(minutes=minutes - 1)
    records = run_query(db, LogQuery(since=since, limit=MAX_RECORDS))
    return summarise(records, now=now, minutes=minutes)
