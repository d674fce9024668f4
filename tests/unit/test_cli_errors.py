"""Wrong usage and bad input at the command line: one line, the right exit code, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def tlsgate(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TLSGATE_HOME=str(home))
    env.pop("TLSGATE_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def one_line_error(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tlsgate: error: ")
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("serve", "--listen", "nonsense"), ("is not HOST:PORT",)),
        (("serve", "--listen", "127.0.0.1:99999"), ("is not HOST:PORT",)),
        (("serve", "--bogus"), ("No such option",)),
        (("serve", "--event-loop", "trio"), ("--event-loop", "'auto', 'uvloop', 'asyncio'")),
        (("serve", "--malloc", "jemalloc"), ("--malloc", "'tuned', 'default'")),
        (("bogus",), ("No such command",)),
        (("log", "--since", "yesterday-ish"), ("--since",)),
        (("probe",), ("Missing argument",)),
    ],
)
def test_usage_errors(tmp_path, args, words):
    one_line_error(tlsgate(*args, home=tmp_path), 2, *words)


def test_missing_and_broken_config_files(tmp_path):
    one_line_error(
        tlsgate("serve", "--config", str(tmp_path / "nope.toml"), home=tmp_path), 2, "no such file"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[inspection]\non_client_certificate = "allow"\n')
    one_line_error(
        tlsgate("serve", "--config", str(bad), home=tmp_path),
        2,
        "bad.toml:2",
        "inspection.on_client_certificate",
        "'allow'",
    )


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = tlsgate("serve", "--listen", f"127.0.0.1:{port}", home=tmp_path)
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_unwritable_home(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = tlsgate("ca", "show", "--home", str(blocker / "home"), home=tmp_path)
    one_line_error(r, 2, "cannot create home directory")


def test_fingerprints_are_printed_verbatim(tmp_path):
    """Rich would turn ':CD:' into an emoji; a fingerprint must reach the admin intact."""
    from tlsgate.commands.common import console

    with console.capture() as cap:
        console.print("20:CD:0C:AB:E4", markup=False)
    assert cap.get().strip() == "20:CD:0C:AB:E4"


def test_log_table_never_reads_markup_from_a_url():
    from rich.console import Console

    from tlsgate.log.formats import table
    from tlsgate.log.record import LogRecord

    rec = LogRecord(url="http://a/[bold]x[/bold]", user="[red]eve", status=200, method="GET")
    c = Console(width=300, emoji=False)
    with c.capture() as cap:
        c.print(table([rec]))
    out = cap.get()
    assert "[bold]x[/bold]" in out and "[red]eve" in out


def test_command_output_never_reads_markup():
    """Server- and admin-supplied text reaches the terminal as written."""
    from tlsgate.commands.common import console

    with console.capture() as cap:
        console.print("CN=[bold]evil[/bold] CA")
    assert cap.get().strip() == "CN=[bold]evil[/bold] CA"
