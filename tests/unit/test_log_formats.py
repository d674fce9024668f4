"""Every output format of a log record parses back to the record's values."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tlsgate.log.formats import (
    W3C_FIELDS,
    W3C_URI_FIELDS,
    from_dict,
    render_detail,
    squid_action,
    table,
    to_json,
    to_squid,
    to_w3c,
    w3c_header,
)
from tlsgate.log.record import FIELDS, LogRecord, new_request_id, to_micros
from tlsgate.status import lookup


def seed_record(**overrides: object) -> LogRecord:
    """The seed's denied DIRSYNC request, as tlsgate logs it."""
    values: dict[str, object] = dict(
        request_id="0a18f9a400000001",
        time=datetime(2013, 12, 20, 17, 44, 55, 123456, tzinfo=UTC),
        member="gw1",
        client_ip="10.0.0.5",
        client_port=51234,
        agent="Microsoft Online Services Directory Sync/1.0 (+x; 100%)",
        dest_host="login.microsoftonline.com",
        dest_ip="127.0.0.9",
        dest_port=443,
        time_taken_ms=63,
        bytes_sent=612,
        bytes_received=1041,
        protocol="https-inspect",
        method="POST",
        url="https://login.microsoftonline.com/RST2.srf?a=1+2&b=%20x",
        object_source=0,
        status=12229,
        rule="Anonymous Access To Web",
        filter_info="Compression: client=No, server=Yes",
        source_network="Internal",
        dest_network="External",
        error_info="upstream sent CertificateRequest",
        action="Denied",
        inspection="deny",
        inspection_reason="server requested a client certificate (TLS 1.3)",
        tls_version="TLSv1.3",
        upstream_cert_subject="CN=login.microsoftonline.com",
    )
    values.update(overrides)
    return LogRecord(**values)  # type: ignore[arg-type]


# -- JSON ----------------------------------------------------------------------------


def test_json_is_one_object_per_line_and_round_trips() -> None:
    rec = seed_record()
    line = to_json(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["time"] == "2013-12-20T17:44:55.123456Z"
    assert data["status"] == 12229 and data["user"] == "anonymous"
    assert set(data) == set(FIELDS)
    assert from_dict(data) == rec


# -- W3C -------------------------------------------------------------------------------


def parse_w3c(text: str) -> list[dict[str, str]]:
    """A W3C extended log reader: directives, then space-separated fields per #Fields."""
    fields: list[str] = []
    rows = []
    for line in text.splitlines():
        if line.startswith("#Fields:"):
            fields = line.split()[1:]
        elif line.startswith("#") or not line:
            continue
        else:
            values = line.split(" ")
            assert len(values) == len(fields), line
            row = {}
            for name, raw in zip(fields, values, strict=True):
                if raw == "-":
                    row[name] = ""
                elif name in W3C_URI_FIELDS:
                    row[name] = raw
                else:
                    row[name] = unquote_plus(raw)
            rows.append(row)
    return rows


def w3c_to_record_values(row: dict[str, str]) -> dict[str, object]:
    """Map a parsed W3C row back to record field values."""
    out: dict[str, object] = {}
    by_name = dict(W3C_FIELDS)
    defaults = LogRecord()
    for name, field in by_name.items():
        if name in ("date", "time"):
            continue
        raw = row[name]
        current = getattr(defaults, field)
        if isinstance(current, bool):
            out[field] = raw == "Y"
        elif field == "cache_info":
            out[field] = int(raw, 16)
        elif isinstance(current, int):
            out[field] = int(raw)
        else:
            out[field] = raw
    out["time"] = datetime.fromisoformat(f"{row['date']}T{row['time']}+00:00")
    return out


def test_w3c_header_names_tmg_fields_then_own_x_fields() -> None:
    header = w3c_header(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    lines = header.splitlines()
    assert lines[0].startswith("#Software: tlsgate ")
    assert lines[1] == "#Version: 1.0"
    assert lines[2] == "#Date: 2026-11-25 10:00:00"
    names = lines[3].split()[1:]
    assert names[:6] == ["c-ip", "cs-username", "c-agent", "sc-authenticated", "date", "time"]
    assert "sc-status" in names and "FilterInfo" in names and "action" in names
    own = names[names.index("action") + 1 :]
    assert own and all(n.startswith("x-") for n in own)
    # Every record field appears in the W3C line.
    assert {f for _, f in W3C_FIELDS} == set(FIELDS)


def test_w3c_line_parses_back() -> None:
    rec = seed_record()
    text = w3c_header() + to_w3c(rec) + "\n"
    [row] = parse_w3c(text)
    assert row["c-ip"] == "10.0.0.5"
    assert row["sc-status"] == "12229"
    assert row["date"] == "2013-12-20" and row["time"] == "17:44:55"
    assert row["s-cache-info"] == "0x0"
    assert row["c-agent"] == rec.agent  # spaces, '+' and '%' survive
    assert row["cs-uri"] == rec.url  # URIs are written as received
    assert row["cs-referred"] == ""  # empty is '-'
    values = w3c_to_record_values(row)
    assert LogRecord(**values) == seed_record(  # type: ignore[arg-type]
        time=rec.time.replace(microsecond=0)
    )


def test_w3c_writes_a_literal_dash_so_it_is_not_read_as_empty() -> None:
    rec = seed_record(rule="-", mime_type="")
    [row] = parse_w3c(w3c_header() + to_w3c(rec))
    assert row["rule"] == "-" and row["cs-mime-type"] == ""


def test_w3c_date_and_time_are_utc() -> None:
    from datetime import timedelta, timezone

    local = datetime(2013, 12, 20, 11, 44, 55, tzinfo=timezone(timedelta(hours=-6)))
    [row] = parse_w3c(w3c_header() + to_w3c(seed_record(time=local)))
    assert (row["date"], row["time"]) == ("2013-12-20", "17:44:55")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(agent=_text, user=_text, rule=_text, reason=_text, subject=_text, mime=_text)
def test_w3c_and_json_round_trip_any_text(
    agent: str, user: str, rule: str, reason: str, subject: str, mime: str
) -> None:
    rec = seed_record(
        agent=agent,
        user=user,
        rule=rule,
        inspection_reason=reason,
        upstream_cert_subject=subject,
        mime_type=mime,
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert from_dict(json.loads(to_json(rec))) == rec
    [row] = parse_w3c(w3c_header() + to_w3c(rec))
    assert LogRecord(**w3c_to_record_values(row)) == rec  # type: ignore[arg-type]


# -- Squid ------------------------------------------------------------------------------


def parse_squid(line: str) -> dict[str, str]:
    names = [
        "time",
        "elapsed",
        "client",
        "action_code",
        "size",
        "method",
        "url",
        "user",
        "hierarchy",
        "type",
    ]
    parts = line.split()
    assert len(parts) == len(names), line
    return dict(zip(names, parts, strict=True))


def test_squid_line_of_a_denied_inspected_request() -> None:
    rec = seed_record()
    row = parse_squid(to_squid(rec))
    assert row["time"] == "1387561495.123"  # seconds.milliseconds
    assert row["elapsed"] == "63"
    assert row["client"] == "10.0.0.5"
    assert row["action_code"] == "TCP_DENIED/502"  # 12229 is sent as 502 Proxy Error
    assert row["size"] == "612"
    assert row["method"] == "POST"
    assert row["url"] == rec.url
    assert row["user"] == "-"
    assert row["hierarchy"] == "HIER_NONE/-"
    assert row["type"] == "-"


def test_squid_codes_for_tunnel_miss_and_failure() -> None:
    tunnel = seed_record(
        action="Allowed",
        protocol="SSL-tunnel",
        status=200,
        method="CONNECT",
        url="login.microsoftonline.com:443",
        inspection="tunnel",
    )
    row = parse_squid(to_squid(tunnel))
    assert row["action_code"] == "TCP_TUNNEL/200"
    assert row["url"] == "login.microsoftonline.com:443"
    assert row["hierarchy"] == "HIER_DIRECT/127.0.0.9"

    miss = seed_record(
        action="Allowed",
        status=200,
        object_source=4,
        mime_type="text/html; charset=utf-8",
        authenticated=True,
        user="alice",
    )
    row = parse_squid(to_squid(miss))
    assert row["action_code"] == "TCP_MISS/200"
    assert row["type"] == "text/html;%20charset=utf-8"
    assert row["user"] == "alice"

    refused = seed_record(action="Failed", status=10061, dest_ip="")
    assert parse_squid(to_squid(refused))["action_code"] == "TCP_MISS/502"
    assert squid_action(seed_record(action="Allowed", status=0)) == "NONE"


# -- Table and detailed view --------------------------------------------------------------


def render(obj: object) -> str:
    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(obj)
    return console.export_text()


def test_table_shows_the_log_viewer_columns() -> None:
    text = render(table([seed_record(), seed_record(status=200, action="Allowed")]))
    header = text.splitlines()[0]
    for col in (
        "Time (UTC)",
        "Source",
        "Destination",
        "Protocol",
        "Method",
        "URL",
        "Status",
        "Rule",
        "User",
        "ms",
        "Request ID",
    ):
        assert col in header
    assert "2013-12-20 17:44:55" in text
    assert "10.0.0.5:51234" in text
    assert "login.microsoftonline.com:443" in text
    assert "12229 The Web site requires" in text
    assert "200 OK" in text
    assert "0a18f9a400000001" in text
    assert len(text.splitlines()) == 3


def test_detail_view_has_every_label_of_the_seed() -> None:
    text = render_detail(seed_record())
    lines = text.splitlines()
    assert lines[0] == "Denied Connection"
    expected = {
        "Log type": "Web Proxy (Forward)",
        "Status": "12229 " + lookup(12229).text,
        "Rule": "Anonymous Access To Web",
        "Source": "Internal (10.0.0.5:51234)",
        "Destination": "External (login.microsoftonline.com 127.0.0.9:443)",
        "Request": "POST https://login.microsoftonline.com/RST2.srf?a=1+2&b=%20x",
        "Filter information": "Req ID: 0a18f9a400000001; Compression: client=No, server=Yes",
        "Protocol": "https-inspect",
        "User": "anonymous",
        "Object source": "None (No source information is available.)",
        "Cache info": "0x0",
        "Processing time": "63 ms",
        "MIME type": "-",
        "Inspection": "deny (server requested a client certificate (TLS 1.3))",
        "TLS version": "TLSv1.3",
        "Upstream certificate": "CN=login.microsoftonline.com",
        "Error info": "upstream sent CertificateRequest",
        "Remedy": lookup(12229).remedy,
    }
    got = dict(line.split(": ", 1) for line in lines[2:] if ": " in line)
    for label, value in expected.items():
        assert got[label] == value, label


def test_detail_view_of_a_successful_request_has_no_remedy() -> None:
    text = render_detail(seed_record(status=200, action="Allowed", object_source=4))
    assert text.startswith("Allowed Connection")
    assert "Status: 200 OK" in text
    assert "Object source: Internet (Source is the Internet." in text
    assert "Remedy" not in text


def test_request_ids_are_short_hex_and_unique() -> None:
    made = [new_request_id() for _ in range(10000)]
    assert len(set(made)) == 10000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in made)
    assert len({i[:8] for i in made}) == 1  # one prefix per process
    counters = [int(i[8:], 16) for i in made]  # then the counter, in order, across blocks
    assert all((b - a) % 2**32 == 1 for a, b in itertools.pairwise(counters))


def test_record_parameters_are_the_fields_in_order() -> None:
    """``LogRecord.__init__`` is written out (for speed): positional values land in the
    fields of the same position, so ``LogRecord(*values_of(r))`` rebuilds ``r``."""
    rec = LogRecord()
    values = [
        f"value {i}" if isinstance(getattr(rec, f), str) else getattr(rec, f)
        for i, f in enumerate(FIELDS)
    ]
    values = [i + 1000 if type(v) is int else v for i, v in enumerate(values)]
    rebuilt = LogRecord(*values)  # type: ignore[arg-type]
    assert [getattr(rebuilt, f) for f in FIELDS] == values
    assert LogRecord(**{f: getattr(rebuilt, f) for f in FIELDS}) == rebuilt  # type: ignore[arg-type]
    assert LogRecord().request_id != LogRecord().request_id  # a fresh id each time


def test_record_time_is_kept_in_microseconds_and_read_as_aware_utc() -> None:
    """The record stores its start as microseconds (cheaper than a datetime per
    request); ``time`` reads and writes it as a datetime, a naive one taken as UTC."""
    naive = datetime(2026, 11, 26, 1, 2, 3, 999999)
    rec = LogRecord(time=naive)
    assert rec.time == naive.replace(tzinfo=UTC) and rec.time.tzinfo is UTC
    assert rec.time_us == to_micros(naive) == 1795654923999999
    paris = datetime(2026, 11, 26, 2, 2, 3, 5, tzinfo=timezone(timedelta(hours=1)))
    rec.time = paris
    assert rec.time == paris and rec.time.tzinfo is UTC
    before = datetime.now(UTC)
    fresh = LogRecord()
    assert abs(fresh.time - before) < timedelta(seconds=1)
    assert "time" in FIELDS and "time_us" not in FIELDS  # sinks see the datetime


def test_values_but_time_are_the_fields_but_time_in_order() -> None:
    """``values_but_time`` is written out (compiled, for the log daemon's frames): each
    field's value lands at its place in ``FIELDS`` without ``time``."""
    rec = LogRecord()
    names = [f for f in FIELDS if f != "time"]
    for i, name in enumerate(names):
        value = getattr(rec, name)
        if type(value) is not bool:  # one bool field: its place is checked by type
            setattr(rec, name, i + 1000 if type(value) is int else f"value {i}")
    assert rec.values_but_time() == tuple(getattr(rec, f) for f in names)
