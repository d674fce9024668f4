"""``tlsgate log`` and ``tlsgate log show`` on a home whose records went through the writer."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import tlsgate
from tlsgate.commands.log import log
from tlsgate.config.home import Home
from tlsgate.errors import TlsgateError
from tlsgate.log.record import LogRecord
from tlsgate.log.sinks import open_log_sink
from tlsgate.log.writer import LogWriter
from tlsgate.status import lookup


@pytest.fixture
def now() -> datetime:
    """The records' times are relative to the test's own start: relative filters
    (``--since 10m``) read the real clock, and a module-level time went stale when the
    suite took longer than the margins (seen: 8 minutes from collection to this test)."""
    return datetime.now(UTC).replace(microsecond=0)


def write(home: Path, records: list[LogRecord], store: str | None = None) -> None:
    async def main() -> None:
        async with LogWriter([open_log_sink(store, Home(home))]) as writer:
            for rec in records:
                writer.submit(rec)

    asyncio.run(main())


def sample(now: datetime) -> list[LogRecord]:
    return [
        LogRecord(
            request_id="00000000000000a1",
            time=now - timedelta(hours=2),
            client_ip="10.0.0.5",
            client_port=5000,
            dest_host="www.example.com",
            dest_port=80,
            method="GET",
            url="http://www.example.com/",
            status=200,
            rule="Allow web",
            object_source=4,
            mime_type="text/html",
        ),
        LogRecord(
            request_id="00000000000000b2",
            time=now - timedelta(minutes=3),
            client_ip="10.0.0.6",
            client_port=5001,
            dest_host="login.microsoftonline.com",
            dest_port=443,
            method="POST",
            url="https://login.microsoftonline.com/x",
            status=12229,
            protocol="https-inspect",
            action="Denied",
            rule="Anonymous Access To Web",
            source_network="Internal",
            dest_network="External",
            inspection="deny",
            inspection_reason="server requested a client certificate",
        ),
        LogRecord(
            request_id="00000000000000c3",
            time=now - timedelta(minutes=1),
            client_ip="192.168.1.9",
            client_port=5002,
            dest_host="bank.example",
            dest_port=443,
            method="CONNECT",
            url="bank.example:443",
            status=200,
            protocol="SSL-tunnel",
            inspection="tunnel",
            user="bob",
            authenticated=True,
        ),
    ]


@pytest.fixture
def home(tlsgate_home: Path, now: datetime) -> Path:
    write(tlsgate_home, sample(now))
    return tlsgate_home


def run(*args: str) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(log, list(args), prog_name="tlsgate log")
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, result.stderr, exc


def test_bare_log_lists_a_table(home: Path) -> None:
    code, out, _, exc = run("--home", str(home))
    assert (code, exc) == (0, None)
    lines = out.splitlines()
    assert "Status" in lines[0] and "Request ID" in lines[0]
    assert len(lines) == 4
    assert "12229 The Web site requires" in lines[2]
    assert "00000000000000c3" in lines[3]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["00000000000000a1", "00000000000000b2", "00000000000000c3"]),
        (("--status", "12229"), ["00000000000000b2"]),
        (
            ("--status", "12229", "--status", "200"),
            ["00000000000000a1", "00000000000000b2", "00000000000000c3"],
        ),
        (("--source", "10.0.0.0/24"), ["00000000000000a1", "00000000000000b2"]),
        (("--source", "192.168.1.9"), ["00000000000000c3"]),
        (("--host", "*.microsoftonline.com"), ["00000000000000b2"]),
        (("--host", "www.example.com"), ["00000000000000a1"]),
        (("--rule", "Allow web"), ["00000000000000a1"]),
        (("--user", "bob"), ["00000000000000c3"]),
        (("--since", "10m"), ["00000000000000b2", "00000000000000c3"]),
        (("--since", timedelta(minutes=2)), ["00000000000000c3"]),  # an absolute time
        (("--until", "30m"), ["00000000000000a1"]),
        (("--limit", "1"), ["00000000000000c3"]),
    ],
)
def test_filters_in_json(
    home: Path, now: datetime, args: tuple[str | timedelta, ...], expected: list[str]
) -> None:
    texts = [(now - a).isoformat() if isinstance(a, timedelta) else a for a in args]
    code, out, _, exc = run("--home", str(home), "--format", "json", *texts)
    assert (code, exc) == (0, None)
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == expected


def test_w3c_and_squid_formats(home: Path) -> None:
    _, out, _, _ = run("--home", str(home), "--format", "w3c")
    lines = out.splitlines()
    assert lines[0].startswith("#Software: tlsgate")
    fields = next(line for line in lines if line.startswith("#Fields:")).split()[1:]
    data = [line.split(" ") for line in lines if not line.startswith("#")]
    assert len(data) == 3 and all(len(d) == len(fields) for d in data)
    assert dict(zip(fields, data[1], strict=True))["sc-status"] == "12229"

    _, out, _, _ = run("--home", str(home), "--format", "squid")
    rows = [line.split() for line in out.splitlines()]
    assert [len(row) for row in rows] == [10, 10, 10]
    assert [row[3] for row in rows] == ["TCP_MISS/200", "TCP_DENIED/502", "TCP_TUNNEL/200"]


def test_show_prints_the_detailed_view(home: Path) -> None:
    code, out, _, exc = run("show", "00000000000000b2", "--home", str(home))
    assert (code, exc) == (0, None)
    assert out.startswith("Denied Connection\n")
    assert "Log type: Web Proxy (Forward)" in out
    assert f"Status: 12229 {lookup(12229).text}" in out
    assert "Rule: Anonymous Access To Web" in out
    assert "Source: Internal (10.0.0.6:5001)" in out
    assert "Filter information: Req ID: 00000000000000b2" in out
    assert "Protocol: https-inspect" in out
    assert "Inspection: deny (server requested a client certificate)" in out
    assert f"Remedy: {lookup(12229).remedy}" in out


def test_show_takes_home_from_the_group_too(home: Path) -> None:
    code, out, _, exc = run("--home", str(home), "show", "00000000000000a1")
    assert (code, exc) == (0, None)
    assert out.startswith("Allowed Connection\n")


def test_show_unknown_id_is_a_one_line_error(home: Path) -> None:
    code, _, _, exc = run("show", "deadbeef", "--home", str(home))
    assert code == 1
    assert isinstance(exc, TlsgateError)
    assert exc.one_line().startswith("no log record with request id 'deadbeef'")
    assert "\n" not in exc.one_line()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "'yesterday' is not a time"),
        (("--source", "10.0.0.0/99"), "'10.0.0.0/99' is not an IP address or network"),
        (("--format", "xml"), "'xml' is not one of"),
        (("--limit", "0"), "0 is not in the range"),
    ],
)
def test_bad_values_are_usage_errors(home: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err, _ = run("--home", str(home), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_empty_log_says_so(tlsgate_home: Path) -> None:
    code, out, err, exc = run("--home", str(tlsgate_home))
    assert (code, exc, out) == (0, None, "")
    assert "No matching records." in err


def test_postgresql_store(tlsgate_home: Path, fresh_pg_dsn: str, now: datetime) -> None:
    write(tlsgate_home, sample(now), store=fresh_pg_dsn)
    assert not (tlsgate_home / "log.db").exists()
    code, out, _, exc = run(
        "--home",
        str(tlsgate_home),
        "--store",
        fresh_pg_dsn,
        "--format",
        "json",
        "--status",
        "12229",
    )
    assert (code, exc) == (0, None)
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == ["00000000000000b2"]
    code, out, _, exc = run(
        "show", "00000000000000c3", "--store", fresh_pg_dsn, "--home", str(tlsgate_home)
    )
    assert (code, exc) == (0, None)
    assert "Protocol: SSL-tunnel" in out and "User: bob (authenticated)" in out


def _read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from tlsgate log --follow"
    return proc.stdout.readline()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_follow_shows_a_new_record_and_ends_cleanly_on_ctrl_c(home: Path) -> None:
    src = str(Path(tlsgate.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tlsgate.commands.log import log; log()",
            "--home",
            str(home),
            "--follow",
            "--format",
            "json",
            "--limit",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as at a terminal, even when the suite itself runs with SIGINT ignored
        # (a background job of a non-interactive shell inherits that, and so would the
        # child: Python leaves an ignored SIGINT ignored).
        preexec_fn=_default_sigint,
    )
    try:
        assert json.loads(_read_line(proc))["request_id"] == "00000000000000c3"
        write(
            home,
            [
                LogRecord(
                    request_id="00000000000000d4",
                    client_ip="10.0.0.7",
                    dest_host="new.example",
                    status=200,
                )
            ],
        )
        assert json.loads(_read_line(proc))["request_id"] == "00000000000000d4"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
