"""Smoke tests of the test peers themselves: the PKI and nginx, checked with curl and ssl.

If these fail, every end-to-end test of tlsgate that relies on them is meaningless.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.peers.nginx import ECHO_FIELDS, NginxServer, parse_echo
from tests.peers.pki import CertPair, TestPKI


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        check=False,
        timeout=60,
    )


def curl_ok(*args: str) -> bytes:
    result = curl(*args)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def head(*args: str) -> str:
    """Response head (curl -D-) of a GET whose body is thrown away."""
    return curl_ok("--dump-header", "-", "--output", "/dev/null", *args).decode("latin-1")


# -- PKI -----------------------------------------------------------------------------


def strict_context(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.hostname_checks_common_name = False
    return ctx


def test_valid_certificate_passes_strict_verification(nginx: NginxServer, pki: TestPKI) -> None:
    for server_hostname in ("localhost", "127.0.0.1"):
        block = nginx.block("tls")
        with (
            socket.create_connection((block.host, block.port)) as raw,
            strict_context(pki.ca_cert).wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(
    ("preset", "reason"),
    [
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("self_signed", "self-signed certificate"),
        ("untrusted", "self-signed certificate in certificate chain"),
        ("no_server_auth_eku", "unsuitable certificate purpose"),
        ("wrong_name", "IP address mismatch"),
    ],
)
def test_bad_certificates_fail_strict_verification(
    nginx: NginxServer, pki: TestPKI, preset: str, reason: str
) -> None:
    block = nginx.block(preset)
    with socket.create_connection((block.host, block.port)) as raw:
        ctx = strict_context(pki.ca_cert)
        with pytest.raises(ssl.SSLCertVerificationError) as excinfo:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert reason in str(excinfo.value)


def test_client_certificate_is_for_client_auth_only(client_cert: CertPair) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert = client_cert.load_cert()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.rfc4514_string() == "CN=tlsgate test client,O=tlsgate tests"


def test_presets_are_made_once(pki: TestPKI) -> None:
    assert pki.expired() is pki.expired()
    assert pki.client() is pki.client()
    assert pki.client("someone else") is not pki.client()


# -- nginx through curl ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "tls", "tls12", "tls13", "mtls_optional"])
def test_files_are_served_byte_for_byte(nginx: NginxServer, pki: TestPKI, name: str) -> None:
    for path in ("/1k.bin", "/1m.bin"):
        body = curl_ok("--cacert", str(pki.ca_cert), nginx.url(name, path))
        assert body == nginx.content(path)


@pytest.mark.parametrize(
    "name",
    ["expired", "not_yet_valid", "wrong_name", "self_signed", "untrusted", "no_server_auth_eku"],
)
def test_curl_rejects_bad_server_certificates(nginx: NginxServer, pki: TestPKI, name: str) -> None:
    result = curl("--cacert", str(pki.ca_cert), nginx.url(name, "/1k.bin"))
    assert result.returncode == 60, result.stderr
    # With verification off the same server does answer: only the certificate is wrong.
    body = curl_ok("--insecure", nginx.url(name, "/1k.bin"))
    assert body == nginx.content("/1k.bin")


def test_localhost_name_verifies(nginx: NginxServer, pki: TestPKI) -> None:
    url = f"https://localhost:{nginx.port('tls')}/1k.bin"
    assert curl_ok("--cacert", str(pki.ca_cert), url) == nginx.content("/1k.bin")


@pytest.mark.parametrize(("name", "version"), [("mtls_tls12", "1.2"), ("mtls_tls13", "1.3")])
def test_mtls_without_certificate_gets_400(
    nginx: NginxServer, pki: TestPKI, name: str, version: str
) -> None:
    out = head("--cacert", str(pki.ca_cert), nginx.url(name, "/echo"))
    assert out.startswith("HTTP/1.1 400")
    body = curl_ok("--cacert", str(pki.ca_cert), nginx.url(name, "/echo"))
    assert b"No required SSL certificate was sent" in body


@pytest.mark.parametrize(("name", "version"), [("mtls_tls12", "1.2"), ("mtls_tls13", "1.3")])
def test_mtls_with_certificate_reports_the_client(
    nginx: NginxServer, pki: TestPKI, client_cert: CertPair, name: str, version: str
) -> None:
    body = curl_ok(
        "--cacert",
        str(pki.ca_cert),
        "--cert",
        str(client_cert.cert),
        "--key",
        str(client_cert.key),
        nginx.url(name, "/echo"),
    )
    echo = parse_echo(body.decode())
    assert echo["ssl_client_verify"] == "SUCCESS"
    assert echo["ssl_client_s_dn"] == "CN=tlsgate test client,O=tlsgate tests"
    assert echo["ssl_protocol"] == f"TLSv{version}"


def test_tls_versions_are_enforced(nginx: NginxServer, pki: TestPKI) -> None:
    too_new = curl("--cacert", str(pki.ca_cert), "--tlsv1.3", nginx.url("mtls_tls12", "/"))
    assert too_new.returncode == 35  # handshake failure
    too_old = curl("--cacert", str(pki.ca_cert), "--tls-max", "1.2", nginx.url("mtls_tls13", "/"))
    assert too_old.returncode == 35


def test_optional_mtls_accepts_no_certificate(nginx: NginxServer, pki: TestPKI) -> None:
    body = curl_ok("--cacert", str(pki.ca_cert), nginx.url("mtls_optional", "/echo"))
    assert parse_echo(body.decode())["ssl_client_verify"] == "NONE"


def test_echo_reports_what_arrived(nginx: NginxServer) -> None:
    body = curl_ok(
        "--request",
        "POST",
        "--data-binary",
        "ignored",
        "--header",
        "Via: 1.1 tlsgate",
        "--header",
        "Connection: keep-alive",
        nginx.url("plain", "/echo/a?b=c"),
    )
    echo = parse_echo(body.decode())
    assert list(echo) == [key for key, _ in ECHO_FIELDS]
    assert echo["method"] == "POST"
    assert echo["uri"] == "/echo/a?b=c"
    assert echo["via"] == "1.1 tlsgate"
    assert echo["connection"] == "keep-alive"
    assert echo["host"] == nginx.block("plain").authority
    assert echo["scheme"] == "http"
    assert echo["ssl_client_verify"] == ""


def test_put_then_get_roundtrip(nginx: NginxServer, pki: TestPKI, tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(nginx.content("/1m.bin")[::-1])
    url = nginx.url("tls", "/upload/smoke/deep/payload.bin")
    code = curl_ok(
        "--cacert",
        str(pki.ca_cert),
        "--upload-file",
        str(payload),
        "--write-out",
        "%{http_code}",
        "--output",
        "/dev/null",
        url,
    )
    assert code in (b"201", b"204")
    assert nginx.uploaded("/upload/smoke/deep/payload.bin") == payload.read_bytes()
    assert curl_ok("--cacert", str(pki.ca_cert), url) == payload.read_bytes()
    deleted = curl_ok(
        "--cacert",
        str(pki.ca_cert),
        "--request",
        "DELETE",
        "--write-out",
        "%{http_code}",
        "--output",
        "/dev/null",
        url,
    )
    assert deleted == b"204"


@pytest.mark.parametrize("code", [200, 204, 304, 404, 500, 502, 503])
def test_status_endpoints(nginx: NginxServer, code: int) -> None:
    got = curl_ok(
        "--write-out",
        "%{http_code}",
        "--output",
        "/dev/null",
        nginx.url("plain", f"/status/{code}"),
    )
    assert got == str(code).encode()


def test_chunked_is_really_chunked(nginx: NginxServer, pki: TestPKI) -> None:
    for name in ("plain", "tls"):
        out = head("--cacert", str(pki.ca_cert), nginx.url(name, "/chunked")).lower()
        assert "transfer-encoding: chunked" in out
        assert "content-length" not in out
    body = curl_ok("--cacert", str(pki.ca_cert), nginx.url("tls", "/chunked"))
    assert body == nginx.content("/1m.bin")
    small = curl_ok(nginx.url("plain", "/chunked/1k.bin"))
    assert small == nginx.content("/1k.bin")


def test_chunked_framing_on_the_wire(nginx: NginxServer) -> None:
    block = nginx.block("plain")
    with socket.create_connection((block.host, block.port)) as sock:
        sock.sendall(b"GET /chunked/1k.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head_bytes
    assert body.endswith(b"0\r\n\r\n")
    assert body.startswith(b"400\r\n")  # 1024 bytes in hex


def test_close_endpoint_closes(nginx: NginxServer) -> None:
    out = head(nginx.url("plain", "/close"))
    assert "Connection: close" in out
    out = head(nginx.url("plain", "/close/1k.bin"))
    assert "Connection: close" in out


def test_slow_endpoint_serves_everything(nginx: NginxServer) -> None:
    assert curl_ok(nginx.url("plain", "/slow/1k.bin")) == nginx.content("/1k.bin")


def test_access_log_records_requests(nginx: NginxServer) -> None:
    curl_ok("--header", "Via: 1.1 access-log-probe", nginx.url("plain", "/1k.bin"))
    # nginx writes the line as it finalises the request, which may be after curl returns.
    deadline = time.monotonic() + 5
    while not any("1.1 access-log-probe" in line for line in nginx.access_log_lines()):
        assert time.monotonic() < deadline, "the request never reached the access log"
        time.sleep(0.05)


def test_own_nginx_starts_and_stops(pki: TestPKI, tmp_path: Path) -> None:
    server = NginxServer(tmp_path / "nginx", big_files=True)
    server.add_server("only", tls=pki.valid())
    with server:
        body = curl_ok("--cacert", str(pki.ca_cert), server.url("only", "/10m.bin"))
        assert body == server.content("/10m.bin")
        assert server.running
    assert not server.running
    assert curl("--cacert", str(pki.ca_cert), server.url("only", "/")).returncode == 7
