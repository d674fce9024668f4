"""Servers that ask for a client certificate only for some paths, after the handshake.

Apache with ``SSLVerifyClient require`` in ``<Location /secure>``: TLS 1.2 renegotiation
and TLS 1.3 post-handshake authentication, as IIS does per folder.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import curl
from tests.peers.tlsgate import TlsgateProcess

TEXT = "The Web site requires a client certificate"


@pytest.mark.parametrize("block", ["tls12", "tls13"])
def test_late_request_fails_that_request_then_tunnels(
    pki, apache, client_cert, tmp_path, block, peer_ports
):
    home = tmp_path / "home"
    home.mkdir()
    with TlsgateProcess(home, upstream_ca=pki.ca_cert, connect_ports=peer_ports) as p:
        ca = str(p.ca_cert)
        pub = curl("--cacert", ca, apache.url(block, "/public.txt"), proxy=p)
        assert pub.returncode == 0 and pub.stdout == b"public\n", pub.stderr
        late = curl(
            "-i",
            "--suppress-connect-headers",
            "--cacert",
            ca,
            apache.url(block, "/secure/secret.txt"),
            proxy=p,
        )
        out = late.stdout.decode()
        assert out.startswith("HTTP/1.1 502"), out[:400]
        assert "X-Tlsgate-Status: 12229" in out and TEXT in out
        assert "retry and the connection is tunnelled" in out
        # Learned: the next connection is tunnelled and the client's certificate arrives.
        both = tmp_path / "both.pem"
        both.write_bytes(p.ca_cert.read_bytes() + pki.ca_cert.read_bytes())
        ok = curl(
            "--cert",
            str(client_cert.cert),
            "--key",
            str(client_cert.key),
            "--cacert",
            str(both),
            apache.url(block, "/secure/secret.txt"),
            proxy=p,
        )
        assert ok.returncode == 0 and ok.stdout == b"secret\n", ok.stderr


def test_late_request_in_deny_mode_is_not_learned(pki, apache, tmp_path, peer_ports):
    home = tmp_path / "home"
    home.mkdir()
    with TlsgateProcess(
        home,
        upstream_ca=pki.ca_cert,
        config='[inspection]\non_client_certificate = "deny"\n',
        connect_ports=peer_ports,
    ) as p:
        for _ in range(2):
            r = curl(
                "-i",
                "--suppress-connect-headers",
                "--cacert",
                str(p.ca_cert),
                apache.url("tls13", "/secure/secret.txt"),
                proxy=p,
            )
            out = r.stdout.decode()
            assert "X-Tlsgate-Status: 12229" in out
            assert "tlsgate inspection except source add 127.0.0.1" in out
