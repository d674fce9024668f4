"""Several members sharing a store: apply once, every member Synced and changed;
a revision a member cannot load; a store outage; client-certificate exceptions through
staged changes (the seed's admin workflow, end to end)."""

from __future__ import annotations

import json
import time

import pytest
from cryptography import x509

from tests.e2e.conftest import curl, curl_with_cert
from tests.e2e.test_proxy_https import served_certificate
from tests.peers.nginx import parse_echo
from tests.peers.tlsgate import TlsgateProcess, allow_ports_toml

DENY_TEXT = "The Web site requires a client certificate"


def issued_by_tlsgate(p: TlsgateProcess, port: int) -> bool:
    ca = x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    return served_certificate(p, "localhost", port).issuer == ca.subject


def wait_synced(p: TlsgateProcess, count: int, timeout: str = "20s") -> dict:
    r = p.cli("status", "--wait", timeout, "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert len(data["members"]) == count and all(m["state"] == "Synced" for m in data["members"])
    return data


def ok(r) -> None:
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.fixture
def members(pki, fresh_pg_dsn, tmp_path, peer_ports):
    """Three members on one PostgreSQL store; the upstream CA comes from the store."""
    config = f'[upstream]\nca_file = "{pki.ca_cert}"\n' + allow_ports_toml(peer_ports)
    procs = []
    for i in range(3):
        home = tmp_path / f"m{i}"
        home.mkdir()
        cfg = home / "tlsgate.toml"
        cfg.write_text(config)
        procs.append(
            TlsgateProcess(
                home, store=fresh_pg_dsn, member=f"member{i}", extra_args=["--config", str(cfg)]
            ).start()
        )
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def test_apply_once_every_member_synced_and_changed(members, nginx):
    first = members[0]
    wait_synced(first, 3)
    port = nginx.port("tls")
    assert all(issued_by_tlsgate(p, port) for p in members)
    ok(first.cli("inspection", "except", "destination", "add", "localhost"))
    ok(first.cli("apply", "-m", "do not inspect localhost"))
    data = wait_synced(first, 3)
    assert {m["revision"] for m in data["members"]} == {data["revision"]}
    assert not any(issued_by_tlsgate(p, port) for p in members)  # tunnelled everywhere
    history = first.cli("history").stdout
    assert "do not inspect localhost" in history


def test_member_that_cannot_load_a_revision_reports_error_and_keeps_serving(members, nginx):
    first = members[0]
    wait_synced(first, 3)
    doc = first.cli("config", "export").stdout
    bad = first.home / "bad.toml"
    assert "ca_file" in doc
    bad.write_text(_replace_ca(doc, "/nonexistent/ca.pem"))
    ok(first.cli("config", "import", str(bad)))
    ok(first.cli("apply", "-m", "broken CA path"))
    deadline = time.monotonic() + 20
    while True:
        r = first.cli("status", "--json")
        states = {m["name"]: m for m in json.loads(r.stdout)["members"]}
        if all(m["state"] == "Error" for m in states.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.returncode == 1
    assert all(m["state"] == "Error" for m in states.values()), states
    assert "/nonexistent/ca.pem" in states["member0"]["description"]
    # still serving on the last good revision
    r = curl("--cacert", str(members[1].ca_cert), nginx.url("tls", "/1k.bin"), proxy=members[1])
    assert r.returncode == 0 and r.stdout == nginx.content("/1k.bin")
    head = json.loads(first.cli("status", "--json").stdout)["revision"]
    ok(first.cli("rollback", str(head - 1), "-m", "undo"))
    wait_synced(first, 3)


def _replace_ca(doc: str, path: str) -> str:
    lines = doc.splitlines()
    out, section = [], ""
    for line in lines:
        if line.startswith("["):
            section = line.strip()
        if section == "[upstream]" and line.startswith("ca_file"):
            line = f'ca_file = "{path}"'
        out.append(line)
    return "\n".join(out) + "\n"


def test_store_outage_members_keep_serving_then_resync(
    private_postgres, pki, nginx, tmp_path, peer_ports
):
    home = tmp_path / "home"
    home.mkdir()
    p = TlsgateProcess(
        home, upstream_ca=pki.ca_cert, store=private_postgres.dsn, connect_ports=peer_ports
    ).start()
    try:
        wait_synced(p, 1)
        private_postgres.stop()
        for _ in range(3):
            r = curl("--cacert", str(p.ca_cert), nginx.url("tls", "/1k.bin"), proxy=p)
            assert r.returncode == 0 and r.stdout == nginx.content("/1k.bin")
        down = p.cli("history")
        assert down.returncode == 3 and "PostgreSQL" in down.stderr
        assert "Traceback" not in down.stderr and len(down.stderr.strip().splitlines()) == 1
        p.wait_for_log("until the store is back")
        private_postgres.start()
        ok(p.cli("inspection", "except", "destination", "add", "localhost"))
        ok(p.cli("apply", "-m", "after the outage"))
        wait_synced(p, 1, "30s")
        assert not issued_by_tlsgate(p, nginx.port("tls"))
    finally:
        p.stop()


# -- the seed's workflow: client-certificate servers through staged changes ----------


@pytest.fixture
def deny_member(pki, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    p = TlsgateProcess(
        home,
        upstream_ca=pki.ca_cert,
        connect_ports=peer_ports,
        config='[inspection]\non_client_certificate = "deny"\n',
    ).start()
    yield p
    p.stop()


def mtls_get(p, nginx, client_cert, bundle):
    url = nginx.url("mtls_tls13", "/echo")
    return curl_with_cert(client_cert, bundle, url, p, "-i", "--suppress-connect-headers")


def test_deny_then_source_exception_then_destination_exception(
    deny_member, nginx, client_cert, pki, tmp_path
):
    p = deny_member
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(p.ca_cert.read_bytes() + pki.ca_cert.read_bytes())
    denied = mtls_get(p, nginx, client_cert, bundle).stdout.decode()
    assert "X-Tlsgate-Status: 12229" in denied and DENY_TEXT in denied
    ok(p.cli("inspection", "except", "source", "add", "127.0.0.1"))
    ok(p.cli("apply", "-m", "dirsync agent"))
    wait_synced(p, 1)
    out = mtls_get(p, nginx, client_cert, bundle).stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out[:300]
    assert "CN=tlsgate test client" in parse_echo(out.split("\r\n\r\n", 1)[1])["ssl_client_s_dn"]
    # the same with a destination exception instead
    ok(p.cli("inspection", "except", "source", "remove", "127.0.0.1"))
    ok(p.cli("apply"))
    wait_synced(p, 1)
    assert "12229" in mtls_get(p, nginx, client_cert, bundle).stdout.decode()
    ok(p.cli("inspection", "except", "destination", "add", "localhost"))
    ok(p.cli("apply"))
    wait_synced(p, 1)
    assert mtls_get(p, nginx, client_cert, bundle).stdout.startswith(b"HTTP/1.1 200")
    rows = [json.loads(x) for x in p.cli("log", "--format", "json").stdout.splitlines()]
    assert any(r["status"] == 12229 and r["protocol"] == "https-inspect" for r in rows)


def test_learned_listed_forgotten_and_expired(pki, nginx, client_cert, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    cfg = "[inspection]\nlearned_ttl_hours = 0.001\n"  # 3.6 s
    with TlsgateProcess(home, upstream_ca=pki.ca_cert, connect_ports=peer_ports, config=cfg) as p:
        bundle = tmp_path / "both.pem"
        bundle.write_bytes(p.ca_cert.read_bytes() + pki.ca_cert.read_bytes())
        port = nginx.port("mtls_tls12")
        url = nginx.url("mtls_tls12", "/echo")
        host = nginx.host("mtls_tls12")
        assert curl_with_cert(client_cert, bundle, url, p).returncode == 0
        listed = p.cli("inspection", "learned", "list").stdout
        assert f"{host}:{port}" in listed and "client certificate" in listed
        ok(p.cli("inspection", "learned", "forget", f"{host}:{port}"))
        assert "no learned exceptions" in p.cli("inspection", "learned", "list").stdout
        assert curl_with_cert(client_cert, bundle, url, p).returncode == 0  # learned again
        assert f"{host}:{port}" in p.cli("inspection", "learned", "list").stdout
        time.sleep(4)
        assert "no learned exceptions" in p.cli("inspection", "learned", "list").stdout
        missing = p.cli("inspection", "learned", "forget", "nowhere.example:443")
        assert missing.returncode == 2 and "not a learned exception" in missing.stderr
