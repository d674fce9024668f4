"""HTTPS inspection end to end: curl and httpx through tlsgate to real nginx servers."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest
from cryptography import x509

from tests.e2e.conftest import curl
from tests.peers.tlsgate import TlsgateProcess


def served_certificate(proxy: TlsgateProcess, host: str, port: int) -> x509.Certificate:
    """The certificate the client sees for host:port through the proxy (openssl s_client)."""
    out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-proxy",
            f"127.0.0.1:{proxy.port}",
            "-connect",
            f"{host}:{port}",
            "-servername",
            host,
            "-showcerts",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    ).stdout
    pem = out[
        out.index(b"-----BEGIN CERTIFICATE-----") : out.index(b"-----END CERTIFICATE-----") + 25
    ]
    return x509.load_pem_x509_certificate(pem)


@pytest.mark.parametrize("block", ["tls", "tls12", "tls13"])
def test_inspected_download_is_byte_identical(proxy, nginx, block):
    for path in ("/1k.bin", "/1m.bin"):
        r = curl("--cacert", str(proxy.ca_cert), nginx.url(block, path), proxy=proxy)
        assert r.returncode == 0, r.stderr
        assert r.stdout == nginx.content(path)


def test_leaf_is_issued_by_tlsgate_for_the_requested_name(proxy, nginx):
    ca = x509.load_pem_x509_certificate(proxy.ca_cert.read_bytes())
    port = nginx.port("tls")
    leaf = served_certificate(proxy, "localhost", port)
    assert leaf.issuer == ca.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    ip_leaf = served_certificate(proxy, "127.0.0.1", port)
    ip_sans = ip_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in ip_sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_requests_inside_inspected_connection_are_proxied(proxy, nginx, tmp_path):
    ctx = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.proxy_url, verify=ctx) as client:
        base = f"https://localhost:{nginx.port('tls')}"
        for _ in range(3):
            r = client.get(base + "/echo")
            assert r.status_code == 200 and "tlsgate" in r.text  # Via reached nginx
        body = b"x" * 300_000
        assert client.put(base + "/upload/in-tls.bin", content=body).status_code in (201, 204)
        assert nginx.uploaded("/upload/in-tls.bin") == body
        assert client.head(base + "/1m.bin").headers["content-length"] == str(1 << 20)
        assert client.get(base + "/1k.bin").content == nginx.content("/1k.bin")


@pytest.mark.parametrize(
    ("block", "status", "words"),
    [
        ("expired", "12225", "expired"),
        ("not_yet_valid", "12224", "not yet valid"),
        ("self_signed", "12226", "untrusted authority"),
        ("untrusted", "12226", "untrusted authority"),
        ("wrong_name", "12227", "does not match"),
        ("no_server_auth_eku", "12228", "server authentication"),
    ],
)
def test_upstream_certificate_problems_get_a_page_inside_tls(proxy, nginx, block, status, words):
    r = curl(
        "-i",
        "--suppress-connect-headers",
        "--cacert",
        str(proxy.ca_cert),
        nginx.url(block, "/1k.bin"),
        proxy=proxy,
    )
    assert r.returncode == 0, r.stderr  # the client's TLS with tlsgate succeeded
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 502"), out[:300]
    assert f"X-Tlsgate-Status: {status}" in out
    assert words in out


def test_no_inspect_tunnels(pki, nginx, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    with TlsgateProcess(
        home, upstream_ca=pki.ca_cert, extra_args=["--no-inspect"], connect_ports=peer_ports
    ) as p:
        r = curl("--cacert", str(pki.ca_cert), nginx.url("tls", "/1m.bin"), proxy=p)
        assert r.returncode == 0, r.stderr
        assert r.stdout == nginx.content("/1m.bin")
        leaf = served_certificate(p, "localhost", nginx.port("tls"))
        assert leaf.issuer != x509.load_pem_x509_certificate(p.ca_cert.read_bytes()).subject


def test_connect_to_closed_port_is_502_before_tls(pki, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    home = tmp_path / "home"
    home.mkdir()
    with TlsgateProcess(home, upstream_ca=pki.ca_cert, connect_ports=[closed]) as p:
        r = curl("-v", "--cacert", str(p.ca_cert), f"https://127.0.0.1:{closed}/", proxy=p)
        assert r.returncode != 0
        assert b"CONNECT tunnel failed, response 502" in r.stderr
