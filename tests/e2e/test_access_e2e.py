"""Access rules and proxy authentication end to end, with curl through a real tlsgate."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import curl
from tests.peers.tlsgate import TlsgateProcess
from tlsgate.policy.auth import hash_password


def log_rows(p: TlsgateProcess, pred, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = p.cli("log", "--format", "json", "--limit", "500")
        rows = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
        hits = [x for x in rows if pred(x)]
        if hits:
            return hits[-1]
        time.sleep(0.2)
    raise AssertionError("no such log record")


def test_out_of_the_box_policy(pki, nginx, tlsgate_home):
    """Defaults: HTTP and HTTPS from Internal; CONNECT to 443 only (12204 otherwise)."""
    with TlsgateProcess(tlsgate_home, upstream_ca=pki.ca_cert) as p:
        ok = curl(nginx.url("plain", "/1k.bin"), proxy=p)
        assert ok.returncode == 0 and ok.stdout == nginx.content("/1k.bin")
        r = curl("-v", "--cacert", str(p.ca_cert), nginx.url("tls", "/1k.bin"), proxy=p)
        assert b"CONNECT tunnel failed, response 403" in r.stderr
        rec = log_rows(p, lambda x: x["method"] == "CONNECT" and x["status"] == 12204)
        assert rec["action"] == "Denied" and rec["rule"] == "Allow web access"
        allowed = log_rows(p, lambda x: x["url"].endswith("/1k.bin") and x["status"] == 200)
        assert allowed["rule"] == "Allow web access" and allowed["source_network"] == "Internal"


def test_proxy_cannot_reach_itself(pki, tlsgate_home):
    with TlsgateProcess(tlsgate_home, upstream_ca=pki.ca_cert) as p:
        r = curl("-i", f"http://127.0.0.1:{p.port}/", proxy=p)
        assert r.stdout.startswith(b"HTTP/1.1 403")
        assert b"X-Tlsgate-Status: 12202" in r.stdout
        assert b"never reachable through the proxy" in r.stdout


RULES = """
[[domain_sets]]
name = "blocked"
domains = ["*.blocked.test", "localhost"]

[[rules]]
name = "Block bad sites"
action = "deny"
sources = ["any"]
destinations = ["blocked"]

[[rules]]
name = "Staff web access"
action = "allow"
sources = ["Internal"]
destinations = ["any"]
users = ["authenticated"]
connect_ports = [443, {ports}]
"""


@pytest.fixture
def auth_proxy(pki, nginx, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    cfg = RULES.format(ports=", ".join(str(x) for x in peer_ports))
    cfg += f'\n[[users]]\nname = "alice"\npassword_hash = "{hash_password("s3cret")}"\n'
    with TlsgateProcess(home, upstream_ca=pki.ca_cert, config=cfg) as p:
        yield p


def test_rule_denial_names_the_rule(auth_proxy, nginx):
    r = curl(
        "-i",
        "--proxy-user",
        "alice:s3cret",
        f"http://localhost:{nginx.port('plain')}/1k.bin",
        proxy=auth_proxy,
    )
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 403")
    assert "X-Tlsgate-Status: 12202" in out and "Block bad sites" in out
    rec = log_rows(auth_proxy, lambda x: x["status"] == 12202 and x["rule"] == "Block bad sites")
    assert rec["user"] == "alice" and rec["action"] == "Denied"


def test_407_then_success_and_wrong_password(auth_proxy, nginx):
    url = nginx.url("plain", "/1k.bin")
    r = curl("-i", url, proxy=auth_proxy)
    assert r.stdout.startswith(b"HTTP/1.1 407")
    assert b'Proxy-Authenticate: Basic realm="tlsgate"' in r.stdout
    ok = curl("--proxy-user", "alice:s3cret", url, proxy=auth_proxy)
    assert ok.returncode == 0 and ok.stdout == nginx.content("/1k.bin")
    bad = curl("-i", "--proxy-user", "alice:wrong", url, proxy=auth_proxy)
    assert bad.stdout.startswith(b"HTTP/1.1 407")
    rec = log_rows(auth_proxy, lambda x: x["status"] == 200 and x["user"] == "alice")
    assert rec["authenticated"] is True and rec["rule"] == "Staff web access"


def test_https_with_credentials_is_inspected_as_the_user(auth_proxy, nginx):
    r = curl(
        "--proxy-user",
        "alice:s3cret",
        "--cacert",
        str(auth_proxy.ca_cert),
        nginx.url("tls", "/1k.bin"),
        proxy=auth_proxy,
    )
    assert r.returncode == 0 and r.stdout == nginx.content("/1k.bin")
    rec = log_rows(auth_proxy, lambda x: x["protocol"] == "https-inspect" and x["status"] == 200)
    assert rec["user"] == "alice"


def test_failed_logins_are_rate_limited(auth_proxy, nginx):
    url = nginx.url("plain", "/1k.bin")
    codes = []
    for _ in range(8):
        r = curl(
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy-user",
            "alice:nope",
            url,
            proxy=auth_proxy,
        )
        codes.append(r.stdout.decode())
    assert codes[0] == "407" and codes[-1] == "429"
