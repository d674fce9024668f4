"""Fixtures for end-to-end tests through a real tlsgate process."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.apache import ApacheServer
from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI
from tests.peers.tlsgate import TlsgateProcess


@pytest.fixture(scope="session")
def peer_ports(nginx: NginxServer, apache: ApacheServer) -> list[int]:
    """Every test server's port: CONNECT to them must be allowed (the default is 443 only)."""
    return [b.port for b in nginx.blocks.values()] + list(apache.ports.values())


@pytest.fixture(scope="module")
def proxy(
    pki: TestPKI, tmp_path_factory: pytest.TempPathFactory, peer_ports: list[int]
) -> Iterator[TlsgateProcess]:
    """A tlsgate member with default settings that trusts the test CA upstream."""
    p = TlsgateProcess(
        tmp_path_factory.mktemp("tlsgate"), upstream_ca=pki.ca_cert, connect_ports=peer_ports
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def trust_both(
    proxy: TlsgateProcess, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A CA bundle with tlsgate's CA and the test CA (tunnelled servers show their own)."""
    bundle = tmp_path_factory.mktemp("bundle") / "both.pem"
    bundle.write_bytes(proxy.ca_cert.read_bytes() + pki.ca_cert.read_bytes())
    return bundle


def curl(
    *args: str, proxy: TlsgateProcess | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", str(timeout)]
    if proxy is not None:
        cmd += ["-x", proxy.proxy_url]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout + 5)


def curl_with_cert(client_cert, bundle: Path, url: str, proxy: TlsgateProcess, *extra: str):
    """curl presenting the test client certificate, trusting ``bundle``."""
    return curl(
        "--cert",
        str(client_cert.cert),
        "--key",
        str(client_cert.key),
        "--cacert",
        str(bundle),
        *extra,
        url,
        proxy=proxy,
    )


def records(
    proxy: TlsgateProcess,
    *args: str,
    want: int = 1,
    timeout: float = 10.0,
    matching: Callable[[dict], bool] | None = None,
) -> list[dict]:
    """Poll `tlsgate log --format json ARGS` until at least ``want`` records match (the
    filter ARGS, and ``matching`` when given); the matching records (fewer at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        r = proxy.cli("log", "--format", "json", "--limit", "1000", *args)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        if matching is not None:
            rows = [row for row in rows if matching(row)]
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
