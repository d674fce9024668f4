"""The admin console's certificates (``serve --admin-tls``): leaves from tlsgate's CA for
the listen address and localhost, chosen by SNI in a real TLS handshake (in memory),
renewed by a fresh minter after a day."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from tlsgate.admin.tls import RENEW_EVERY, ConsoleCertificates, console_names
from tlsgate.config.home import Home
from tlsgate.tls.ca import load_or_create_ca


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home").ensure()


def handshake(server_ctx: ssl.SSLContext, ca_file: Path, server_name: str | None) -> dict:  # type: ignore[type-arg]
    """A TLS handshake between memory buffers; the verified server certificate."""
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    if server_name is None:
        client_ctx.check_hostname = False  # no SNI is sent without a server name
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    cert = client.getpeercert()
    assert cert
    return cert


def san(cert: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return list(cert["subjectAltName"])


def test_names_are_the_address_and_localhost() -> None:
    assert console_names("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert console_names("::1") == ["::1", "localhost"]
    assert console_names("Proxy1.Example.") == ["proxy1.example", "localhost"]
    assert console_names("localhost") == ["localhost"]
    wildcard = console_names("0.0.0.0")
    assert "0.0.0.0" not in wildcard and "localhost" in wildcard and "127.0.0.1" in wildcard
    assert socket.gethostname().lower() in wildcard or socket.getfqdn().lower() in wildcard


def test_the_leaf_matches_the_name_the_client_asked_for(home: Home) -> None:
    certs = ConsoleCertificates(load_or_create_ca(home), home, "127.0.0.1")
    assert san(handshake(certs.context, home.ca_cert, "127.0.0.1")) == [("IP Address", "127.0.0.1")]
    assert san(handshake(certs.context, home.ca_cert, "localhost")) == [("DNS", "localhost")]
    # No SNI (as for an IP address) or a name it is not for: the listen address's leaf.
    assert san(handshake(certs.context, home.ca_cert, None)) == [("IP Address", "127.0.0.1")]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(certs.context, home.ca_cert, "evil.example")
    assert not list(home.leaf_cache.glob("*evil*"))  # nothing minted for unknown names
    assert {p.name for p in home.leaf_cache.iterdir()} == {"ip=127.0.0.1.pem", "dns=localhost.pem"}


def test_a_new_minter_after_a_day(home: Home) -> None:
    clock = FakeClock()
    certs = ConsoleCertificates(load_or_create_ca(home), home, "127.0.0.1", clock=clock)
    first = certs.context_for("localhost")
    assert certs.context_for("localhost") is first
    clock.t += RENEW_EVERY
    renewed = certs.context_for("localhost")
    assert renewed is not first
    # Handshakes keep working through the first context (its SNI callback switches).
    assert san(handshake(certs.context, home.ca_cert, "localhost")) == [("DNS", "localhost")]
    assert san(handshake(certs.context, home.ca_cert, None)) == [("IP Address", "127.0.0.1")]
