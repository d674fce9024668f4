"""``serve --workers N``: several processes on one port, one log, one stop."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.e2e.conftest import curl
from tests.peers.tlsgate import TlsgateProcess


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def _worker_pids(supervisor: int) -> dict[int, int]:
    """{worker index: pid} of the ``--worker`` children of ``supervisor``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == supervisor and b"--worker" in argv:
            found[int(argv[argv.index(b"--worker") + 1])] = int(entry.name)
    return found


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


def test_workers_share_the_port_and_the_log_and_stop_together(tmp_path, pki, nginx):
    p = TlsgateProcess(
        _home(tmp_path),
        upstream_ca=pki.ca_cert,
        member="gw",
        extra_args=["--workers", "2", "--admin", "off"],
    ).start()
    assert p.proc is not None
    worker = _wait_for(lambda: _worker_pids(p.proc.pid).get(2))
    # The worker listens too before the traffic starts (it logs when it does).
    _wait_for(lambda: "member gw/w2 listening" in p.output())
    for i in range(40):  # a new connection each: the kernel spreads them over both
        url = nginx.url("plain", f"/1k.bin?w={i}")
        r = curl("-o", "/dev/null", "-w", "%{http_code}", url, proxy=p)
        assert r.stdout == b"200"
    assert p.stop() == 0  # SIGTERM to the supervisor stops the worker too
    assert not _alive(worker)
    r = p.cli("log", "--format", "json", "--limit", "1000")
    rows = [json.loads(line) for line in r.stdout.splitlines() if "/1k.bin?w=" in line]
    assert len(rows) == 40  # nothing lost at the stop, whichever process served it
    # 40 connections all hashed to one of two sockets: probability 2^-39.
    assert {row["member"] for row in rows} == {"gw", "gw/w2"}


def test_a_dead_worker_is_started_again(tmp_path, pki, nginx):
    p = TlsgateProcess(
        _home(tmp_path),
        upstream_ca=pki.ca_cert,
        extra_args=["--workers", "2", "--admin", "off"],
    ).start()
    try:
        assert p.proc is not None
        supervisor = p.proc.pid
        first = _wait_for(lambda: _worker_pids(supervisor).get(2))
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: _worker_pids(supervisor).get(2) not in (None, first))
        _wait_for(lambda: "worker 2 exited with status -9; starting it again" in p.output())
        r = curl("-o", "/dev/null", "-w", "%{http_code}", nginx.url("plain", "/1k.bin"), proxy=p)
        assert r.stdout == b"200"
    finally:
        assert p.stop() == 0


def test_workers_go_when_the_supervisor_is_killed(tmp_path, pki):
    p = TlsgateProcess(
        _home(tmp_path), upstream_ca=pki.ca_cert, extra_args=["--workers", "3", "--admin", "off"]
    ).start()
    assert p.proc is not None
    workers = _wait_for(lambda: w if len(w := _worker_pids(p.proc.pid)) == 2 else None)
    p.stop(signal.SIGKILL)  # no chance to stop them: the kernel's parent-death signal does
    _wait_for(lambda: not any(_alive(pid) for pid in workers.values()))


def test_workers_argument_is_checked(tmp_path):
    r = TlsgateProcess(tmp_path).cli("serve", "--workers", "0")
    assert r.returncode == 2
    assert "--workers" in r.stderr and "Traceback" not in r.stderr
