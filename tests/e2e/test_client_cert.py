"""Servers that ask for a client certificate: detected, tunnelled or denied, learned.

Real nginx with ``ssl_verify_client`` (TLS 1.2-only, TLS 1.3-only, optional) and real
``curl --cert`` through tlsgate; nginx's /echo tells which certificate arrived.
"""

from __future__ import annotations

import pytest
from cryptography import x509

from tests.e2e.conftest import curl, curl_with_cert
from tests.e2e.test_proxy_https import served_certificate
from tests.peers.nginx import parse_echo
from tests.peers.tlsgate import TlsgateProcess

DENY_TEXT = (
    "The Web site requires a client certificate, but a client certificate cannot be "
    "supplied when HTTPS inspection is applied to the request."
)


@pytest.mark.parametrize("block", ["mtls_tls12", "mtls_tls13", "mtls_optional"])
def test_tunnel_on_first_request_with_client_certificate(
    proxy, nginx, client_cert, trust_both, block
):
    r = curl_with_cert(client_cert, trust_both, nginx.url(block, "/echo"), proxy)
    assert r.returncode == 0, r.stderr
    echo = parse_echo(r.stdout.decode())
    assert echo["ssl_client_verify"] == "SUCCESS"
    assert "CN=tlsgate test client" in echo["ssl_client_s_dn"]
    # the server's own certificate reached the client: not re-signed
    leaf = served_certificate(proxy, "localhost", nginx.port(block))
    assert leaf.issuer != x509.load_pem_x509_certificate(proxy.ca_cert.read_bytes()).subject


def test_server_without_request_stays_inspected(proxy, nginx):
    ca = x509.load_pem_x509_certificate(proxy.ca_cert.read_bytes())
    assert served_certificate(proxy, "localhost", nginx.port("tls")).issuer == ca.subject


def test_deny_mode_explains_and_names_the_fix(pki, nginx, client_cert, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    with TlsgateProcess(
        home,
        upstream_ca=pki.ca_cert,
        config='[inspection]\non_client_certificate = "deny"\n',
        connect_ports=peer_ports,
    ) as p:
        r = curl(
            "-i",
            "--suppress-connect-headers",
            "--cert",
            str(client_cert.cert),
            "--key",
            str(client_cert.key),
            "--cacert",
            str(p.ca_cert),
            nginx.url("mtls_tls13", "/echo"),
            proxy=p,
        )
        out = r.stdout.decode()
        assert out.startswith("HTTP/1.1 502 Proxy Error"), out[:300]
        assert "X-Tlsgate-Status: 12229" in out
        assert DENY_TEXT in out
        assert "tlsgate inspection except source add 127.0.0.1" in out
        assert "tlsgate inspection except destination add 127.0.0.1" in out


@pytest.mark.parametrize("block", ["mtls_tls12", "mtls_tls13"])
def test_probe_reports_the_request_and_the_decision(nginx, pki, tlsgate_home, block):
    import json

    from tests.peers.tlsgate import cli

    r = cli(
        tlsgate_home,
        "probe",
        f"localhost:{nginx.port(block)}",
        "--upstream-ca",
        str(pki.ca_cert),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["client_cert_requested"] is True
    assert any("tlsgate test CA" in name for name in report["acceptable_cas"])
    assert report["verified"] is True
    assert report["tls_version"] == ("TLSv1.2" if block.endswith("12") else "TLSv1.3")
    assert report["chain"][0]["san"][:1] == ["localhost"]
    assert report["decision"] == {
        "action": "tunnel",
        "reason": "server requested a client certificate",
    }
    human = cli(
        tlsgate_home, "probe", f"localhost:{nginx.port(block)}", "--upstream-ca", str(pki.ca_cert)
    )
    assert (
        "client certificate: requested" in human.stdout and "tlsgate would: tunnel" in human.stdout
    )


def test_probe_shows_certificate_errors(nginx, pki, tlsgate_home):
    import json

    from tests.peers.tlsgate import cli

    r = cli(
        tlsgate_home,
        "probe",
        f"localhost:{nginx.port('expired')}",
        "--upstream-ca",
        str(pki.ca_cert),
        "--json",
    )
    report = json.loads(r.stdout)
    assert report["verified"] is False and report["status"] == 12225
    assert report["chain"], "the chain is shown even when it does not verify"
    assert report["decision"]["action"] == "inspect"
    bad = cli(tlsgate_home, "probe", "no port:x")
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
