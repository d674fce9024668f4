"""Renderers of :class:`LogRecord`: JSON lines, W3C extended, Squid access.log, tables.

Pure functions over records; sinks and ``tlsgate log`` call them.  Every text format
parses back (see tests/unit/test_log_formats.py):

* JSON: one object per line, the record's fields by name, ``time`` in ISO 8601 UTC.
* W3C extended: TMG's field names (``c-ip``, ``cs-username`` …) and tlsgate's own with
  an ``x-`` prefix; ``date``/``time`` in UTC; ``-`` for an empty value.  Text values
  are percent-encoded with ``+`` for a space (decode with ``urllib.parse.unquote_plus``);
  ``cs-uri`` and ``cs-referred`` are URIs and are written as received, only
  whitespace and controls are percent-encoded (so they are not decoded).
* Squid native: ``time.ms elapsed client action/code size method URL user
  hierarchy/from type`` with the mapping to Squid's result codes in :func:`squid_action`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

from rich.table import Table
from rich.text import Text

from tlsgate import __version__
from tlsgate.log.record import FIELDS, LogRecord, object_source_text
from tlsgate.status import lookup

# -- JSON ----------------------------------------------------------------------------


def to_dict(record: LogRecord) -> dict[str, object]:
    """The record as plain JSON-able values (``time``: ISO 8601, microseconds, ``Z``)."""
    out: dict[str, object] = {name: getattr(record, name) for name in FIELDS}
    out["time"] = iso_time(record.time)
    return out


def to_json(record: LogRecord) -> str:
    """One JSON object on one line."""
    return json.dumps(to_dict(record), ensure_ascii=False, separators=(",", ":"))


def from_dict(data: dict[str, object]) -> LogRecord:
    """Inverse of :func:`to_dict` (unknown keys are ignored)."""
    values = {k: v for k, v in data.items() if k in FIELDS}
    t = values.get("time")
    if isinstance(t, str):
        values["time"] = parse_iso_time(t)
    return LogRecord(**values)  # type: ignore[arg-type]


def iso_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- W3C extended ----------------------------------------------------------------------

# (W3C name, record field) in TMG's order; tlsgate's own fields follow with ``x-``.
W3C_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("c-ip", "client_ip"),
    ("cs-username", "user"),
    ("c-agent", "agent"),
    ("sc-authenticated", "authenticated"),
    ("date", "time"),
    ("time", "time"),
    ("s-svcname", "log_type"),
    ("s-computername", "member"),
    ("cs-referred", "referrer"),
    ("r-host", "dest_host"),
    ("r-ip", "dest_ip"),
    ("r-port", "dest_port"),
    ("time-taken", "time_taken_ms"),
    ("sc-bytes", "bytes_sent"),
    ("cs-bytes", "bytes_received"),
    ("cs-protocol", "protocol"),
    ("cs-transport", "transport"),
    ("s-operation", "method"),
    ("cs-uri", "url"),
    ("cs-mime-type", "mime_type"),
    ("s-object-source", "object_source"),
    ("sc-status", "status"),
    ("s-cache-info", "cache_info"),
    ("rule", "rule"),
    ("FilterInfo", "filter_info"),
    ("cs-Network", "source_network"),
    ("sc-Network", "dest_network"),
    ("error-info", "error_info"),
    ("action", "action"),
    ("x-request-id", "request_id"),
    ("x-c-port", "client_port"),
    ("x-inspection", "inspection"),
    ("x-inspection-reason", "inspection_reason"),
    ("x-tls-version", "tls_version"),
    ("x-upstream-cert-subject", "upstream_cert_subject"),
)
W3C_URI_FIELDS: Final = frozenset({"cs-uri", "cs-referred"})

# Printable ASCII except space, '%' and '+' stays as it is; the rest is %XX (UTF-8).
_W3C_TEXT_SAFE: Final = "".join(c for c in string.punctuation if c not in "%+")
# URIs keep every printable ASCII character, '%' included: they are already encoded.
_W3C_URI_SAFE: Final = string.punctuation


def w3c_header(when: datetime | None = None) -> str:
    """The directive lines that open a W3C file (or a ``--format w3c`` listing)."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    names = " ".join(name for name, _ in W3C_FIELDS)
    return (
        f"#Software: tlsgate {__version__}\n"
        "#Version: 1.0\n"
        f"#Date: {when:%Y-%m-%d %H:%M:%S}\n"
        f"#Fields: {names}\n"
    )


def _w3c_text(value: str) -> str:
    if not value:
        return "-"
    if value == "-":
        return "%2D"
    return quote(value, safe=_W3C_TEXT_SAFE).replace("%20", "+")


def _w3c_uri(value: str) -> str:
    return quote(value, safe=_W3C_URI_SAFE) if value else "-"


def to_w3c(record: LogRecord) -> str:
    """One W3C extended line (no newline) in :data:`W3C_FIELDS` order."""
    t = record.time.astimezone(UTC)
    r = record
    return " ".join(
        (
            _w3c_text(r.client_ip),
            _w3c_text(r.user),
            _w3c_text(r.agent),
            "Y" if r.authenticated else "N",
            f"{t:%Y-%m-%d}",
            f"{t:%H:%M:%S}",
            _w3c_text(r.log_type),
            _w3c_text(r.member),
            _w3c_uri(r.referrer),
            _w3c_text(r.dest_host),
            _w3c_text(r.dest_ip),
            str(r.dest_port),
            str(r.time_taken_ms),
            str(r.bytes_sent),
            str(r.bytes_received),
            _w3c_text(r.protocol),
            _w3c_text(r.transport),
            _w3c_text(r.method),
            _w3c_uri(r.url),
            _w3c_text(r.mime_type),
            str(r.object_source),
            str(r.status),
            f"0x{r.cache_info:x}",
            _w3c_text(r.rule),
            _w3c_text(r.filter_info),
            _w3c_text(r.source_network),
            _w3c_text(r.dest_network),
            _w3c_text(r.error_info),
            _w3c_text(r.action),
            _w3c_text(r.request_id),
            str(r.client_port),
            _w3c_text(r.inspection),
            _w3c_text(r.inspection_reason),
            _w3c_text(r.tls_version),
            _w3c_text(r.upstream_cert_subject),
        )
    )


# -- Squid native access.log --------------------------------------------------------------

_SQUID_SAFE: Final = _W3C_URI_SAFE


def _squid_field(value: str) -> str:
    return quote(value, safe=_SQUID_SAFE) if value else "-"


def http_status(record: LogRecord) -> int:
    """The HTTP status the client got: catalogue codes map to their HTTP status."""
    code = record.status
    if 100 <= code <= 999:
        return code
    if code == 0:
        return 0
    return lookup(code).http_status


def squid_action(record: LogRecord) -> str:
    """Squid's result code for the record.

    * ``TCP_DENIED`` — the proxy refused the request (action ``Denied``);
    * ``TCP_TUNNEL`` — a CONNECT passed through as an opaque tunnel (``SSL-tunnel``);
    * ``TCP_HIT`` / ``TCP_REFRESH_UNMODIFIED`` / ``TCP_REFRESH_FAIL_OLD`` /
      ``TCP_IMS_HIT`` — object sources 1, 2, 3 and 7 (tlsgate does not cache today);
    * ``TCP_MISS`` — everything fetched from the server, and failures (Squid logs an
      unreachable or failing upstream as ``TCP_MISS/502`` to ``504`` too);
    * ``NONE`` — no status at all (the client went away before a request).
    """
    if record.action == "Denied":
        return "TCP_DENIED"
    if record.protocol == "SSL-tunnel":
        return "TCP_TUNNEL"
    if record.status == 0:
        return "NONE"
    return _SQUID_CACHE_ACTIONS.get(record.object_source, "TCP_MISS")


_SQUID_CACHE_ACTIONS: Final = {
    1: "TCP_HIT",
    2: "TCP_REFRESH_UNMODIFIED",
    3: "TCP_REFRESH_FAIL_OLD",
    7: "TCP_IMS_HIT",
}


def to_squid(record: LogRecord) -> str:
    """One line of Squid's native ``access.log`` (``logformat squid``)."""
    r = record
    ts = r.time.timestamp()
    user = r.user if r.authenticated and r.user else "-"
    if r.action == "Allowed" and (r.dest_ip or r.dest_host):
        hierarchy = f"{'PARENT_HIT' if r.object_source == 8 else 'HIER_DIRECT'}/" + (
            r.dest_ip or r.dest_host
        )
    else:
        hierarchy = "HIER_NONE/-"
    return (
        f"{ts:.3f} {r.time_taken_ms:6d} {r.client_ip or '-'} "
        f"{squid_action(r)}/{http_status(r):03d} {r.bytes_sent} {r.method or '-'} "
        f"{_squid_field(r.url)} {_squid_field(user)} {hierarchy} {_squid_field(r.mime_type)}"
    )


# -- Tables and the detailed view --------------------------------------------------------


def status_text(code: int) -> str:
    """``12229 The Web site requires a client certificate …`` (catalogue words)."""
    if code == 0:
        return "-"
    return f"{code} {lookup(code).text}"


def _endpoint(host: str, ip: str, port: int) -> str:
    where = ip if not host or host == ip else (f"{host} {ip}" if ip else host)
    if ":" in where and " " not in where:  # bare IPv6 address
        where = f"[{where}]"
    return f"{where}:{port}" if port else where


# (name, widest useful width, narrowest width when the terminal is too narrow)
TABLE_COLUMNS: Final = (
    ("Time (UTC)", 19, 19),
    ("Source", 21, 15),
    ("Destination", 32, 12),
    ("Protocol", 13, 8),
    ("Method", 7, 4),
    ("URL", 60, 12),
    ("Status", 40, 12),
    ("Rule", 20, 6),
    ("User", 12, 6),
    ("ms", 7, 3),
    ("Request ID", 16, 16),
)
# Which columns give up width first when the table does not fit.
_SHRINK_ORDER: Final = (
    "URL",
    "Status",
    "Destination",
    "Rule",
    "User",
    "Source",
    "Protocol",
    "Method",
    "ms",
)


def _table_rows(records: Iterable[LogRecord]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in records:
        rows.append(
            (
                f"{r.time.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                f"{r.client_ip}:{r.client_port}" if r.client_port else r.client_ip,
                _endpoint(r.dest_host, "", r.dest_port),
                r.protocol,
                r.method,
                r.url,
                status_text(r.status),
                r.rule or "-",
                r.user or "-",
                str(r.time_taken_ms),
                r.request_id,
            )
        )
    return rows


def _widths(rows: list[tuple[str, ...]], width: int, fit: bool) -> list[int]:
    want = []
    for i, (name, widest, _) in enumerate(TABLE_COLUMNS):
        content = max([len(name), *(len(row[i]) for row in rows)]) if fit else widest
        want.append(min(widest, content))
    excess = sum(want) + len(want) - 1 - width
    names = [c[0] for c in TABLE_COLUMNS]
    for name in _SHRINK_ORDER:
        if excess <= 0:
            break
        i = names.index(name)
        give = min(excess, max(0, want[i] - TABLE_COLUMNS[i][2]))
        want[i] -= give
        excess -= give
    return want


def table(
    records: Iterable[LogRecord], *, header: bool = True, width: int = 200, fixed: bool = False
) -> Table:
    """A terminal table like TMG's log viewer, at most ``width`` columns wide if it can.

    Columns fit their content; when the terminal is too narrow, long columns (URL and
    status text first) end in an ellipsis.  ``fixed`` sizes columns for the widest
    values instead, so that tables printed one after another (``--follow``) line up.
    The request id is last and never cut: ``tlsgate log show ID`` takes it.
    """
    records = list(records)
    rows = _table_rows(records)
    widths = _widths(rows, width, fit=not fixed)
    t = Table(
        show_header=header,
        box=None,
        pad_edge=False,
        header_style="bold",
        padding=(0, 1),
        collapse_padding=True,
    )
    for (name, _, _), w in zip(TABLE_COLUMNS, widths, strict=True):
        t.add_column(
            name,
            width=w,
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if name == "ms" else "left",
        )
    styles = {"Denied": "red", "Failed": "yellow"}
    for r, row in zip(records, rows, strict=True):
        style = styles.get(r.action, "")
        # Text, not str: a URL or user name must never be read as console markup.
        cells = [Text(c) for c in row]
        cells[6].stylize(style)
        t.add_row(*cells)
    return t


_ACTION_HEADINGS: Final = {
    "Allowed": "Allowed Connection",
    "Denied": "Denied Connection",
    "Failed": "Failed Connection",
}


def render_detail(record: LogRecord) -> str:
    """The detailed view of one record, as TMG's log viewer shows it (plain text)."""
    r = record
    entry = lookup(r.status) if r.status else None
    filter_info = f"Req ID: {r.request_id}" + (f"; {r.filter_info}" if r.filter_info else "")
    inspection = r.inspection + (f" ({r.inspection_reason})" if r.inspection_reason else "")
    lines = [
        _ACTION_HEADINGS.get(r.action, f"{r.action} Connection"),
        f"{r.time.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC",
        f"Log type: {r.log_type}",
        f"Status: {status_text(r.status)}",
        f"Rule: {r.rule or '-'}",
        f"Source: {r.source_network or '-'} ({_endpoint('', r.client_ip, r.client_port)})",
        f"Destination: {r.dest_network or '-'} ({_endpoint(r.dest_host, r.dest_ip, r.dest_port)})",
        f"Request: {r.method or '-'} {r.url or '-'}",
        f"Filter information: {filter_info}",
        f"Protocol: {r.protocol}",
        f"User: {r.user or 'anonymous'}" + (" (authenticated)" if r.authenticated else ""),
        f"Object source: {object_source_text(r.object_source)}",
        f"Cache info: 0x{r.cache_info:x}",
        f"Processing time: {r.time_taken_ms} ms",
        f"MIME type: {r.mime_type or '-'}",
        f"Bytes: {r.bytes_sent} sent to client, {r.bytes_received} received from client",
        f"Inspection: {inspection}",
        f"TLS version: {r.tls_version or '-'}",
        f"Upstream certificate: {r.upstream_cert_subject or '-'}",
        f"Error info: {r.error_info or '-'}",
    ]
    if r.member:
        lines.insert(3, f"Server: {r.member}")
    if entry is not None and entry.remedy and (r.action != "Allowed" or r.status >= 400):
        lines.append(f"Remedy: {entry.remedy}")
    return "\n".join(lines)
