"""Upstream TLS: real in-memory handshakes (two SSLObjects over memory BIOs, no sockets)
prove how certificate failures map to the status catalogue and that the probe context
notices a server's CertificateRequest in TLS 1.2 and 1.3, and the data context does not."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.peers.pki import CertPair, TestPKI
from tlsgate.errors import ConfigError
from tlsgate.status import CATALOGUE
from tlsgate.tls.upstream import (
    UpstreamTLS,
    certreq_detection_works,
    classify_tls_error,
    client_cert_requested,
    handshake_in_memory,
    verification_detail,
)

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def upstream(pki: TestPKI) -> UpstreamTLS:
    """Trusts the test CA only, as a proxy configured with upstream.ca_file would."""
    return UpstreamTLS(pki.ca_cert, use_system_trust=False)


def server_context(
    pair: CertPair,
    *,
    version: ssl.TLSVersion | None = None,
    verify_mode: ssl.VerifyMode = ssl.CERT_NONE,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pair.chain, pair.key)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    ctx.verify_mode = verify_mode
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
    return ctx


# -- certificate classification ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "hostname", "verify_code", "status"),
    [
        ("expired", "localhost", 10, 12225),
        ("not_yet_valid", "localhost", 9, 12224),
        ("wrong_name", "localhost", 62, 12227),
        ("valid", "127.0.0.2", 64, 12227),  # the certificate has 127.0.0.1 and ::1 only
        ("self_signed", "localhost", 18, 12226),
        ("untrusted", "localhost", 19, 12226),  # the server sends its untrusted root too
        ("no_server_auth_eku", "localhost", 26, 12228),
    ],
)
@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_certificate_failures_map_to_tmg_codes(
    pki: TestPKI,
    upstream: UpstreamTLS,
    preset: str,
    hostname: str,
    verify_code: int,
    status: int,
    version: ssl.TLSVersion,
) -> None:
    server = server_context(pki.preset(preset), version=version)
    for ctx in (upstream.probe_context, upstream.data_context):
        _, client_exc, _ = handshake_in_memory(ctx, server, hostname)
        assert isinstance(client_exc, ssl.SSLCertVerificationError), client_exc
        assert client_exc.verify_code == verify_code
        assert classify_tls_error(client_exc) == status
        assert status in CATALOGUE
        detail = verification_detail(client_exc)
        assert "\n" not in detail
        assert detail.startswith("certificate verify failed: ")
        assert client_exc.verify_message in detail


def test_unknown_issuer_not_sent_is_untrusted(pki: TestPKI, upstream: UpstreamTLS) -> None:
    pair = pki.untrusted()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pair.cert, pair.key)  # the leaf alone
    _, client_exc, _ = handshake_in_memory(upstream.probe_context, server, "localhost")
    assert isinstance(client_exc, ssl.SSLCertVerificationError)
    assert client_exc.verify_code == 20  # unable to get local issuer certificate
    assert classify_tls_error(client_exc) == 12226


@pytest.mark.parametrize("hostname", ["localhost", "mtls.test", "127.0.0.1", "::1"])
def test_valid_certificate_verifies(pki: TestPKI, upstream: UpstreamTLS, hostname: str) -> None:
    server = server_context(pki.valid())
    sslobj, client_exc, server_exc = handshake_in_memory(upstream.data_context, server, hostname)
    assert (client_exc, server_exc) == (None, None)
    assert sslobj.version() == "TLSv1.3"
    assert sslobj.selected_alpn_protocol() is None  # the server offered no ALPN
    assert not client_cert_requested(sslobj)


def test_alpn_offered_is_http11(pki: TestPKI, upstream: UpstreamTLS) -> None:
    server = server_context(pki.valid())
    server.set_alpn_protocols(["h2", "http/1.1"])
    sslobj, client_exc, _ = handshake_in_memory(upstream.data_context, server, "localhost")
    assert client_exc is None
    assert sslobj.selected_alpn_protocol() == "http/1.1"


def test_common_name_is_not_used_for_the_host_check(pki: TestPKI, upstream: UpstreamTLS) -> None:
    # "valid" has CN=valid but no SAN "valid": browsers ignore the CN, so do we.
    server = server_context(pki.valid())
    _, client_exc, _ = handshake_in_memory(upstream.data_context, server, "valid")
    assert isinstance(client_exc, ssl.SSLCertVerificationError)
    assert classify_tls_error(client_exc) == 12227


def test_revoked_certificate_maps_to_12230(pki: TestPKI, tmp_path: Path) -> None:
    # UpstreamTLS does not fetch CRLs; this proves the mapping with a context that has one.
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(pki.valid().load_cert().serial_number)
        .revocation_date(now - dt.timedelta(hours=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crl_file = tmp_path / "ca.crl.pem"
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    client = UpstreamTLS(pki.ca_cert, use_system_trust=False).data_context
    client.load_verify_locations(crl_file)
    client.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    _, client_exc, _ = handshake_in_memory(client, server_context(pki.valid()), "localhost")
    assert isinstance(client_exc, ssl.SSLCertVerificationError)
    assert client_exc.verify_code == 23
    assert classify_tls_error(client_exc) == 12230


def test_other_verification_errors_map_to_12902() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = 22  # X509_V_ERR_CERT_CHAIN_TOO_LONG: no TMG code of its own
    exc.verify_message = "certificate chain too long"
    assert classify_tls_error(exc) == 12902
    assert verification_detail(exc) == "certificate verify failed: certificate chain too long"


def test_protocol_version_mismatch_is_12901(pki: TestPKI, upstream: UpstreamTLS) -> None:
    server = server_context(pki.valid())
    server.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    server.maximum_version = ssl.TLSVersion.TLSv1_1
    _, client_exc, _ = handshake_in_memory(upstream.data_context, server, "localhost")
    assert isinstance(client_exc, ssl.SSLError)
    assert not isinstance(client_exc, ssl.SSLCertVerificationError)
    assert classify_tls_error(client_exc) == 12901
    assert verification_detail(client_exc).startswith("TLS handshake failed: ")


def test_plain_http_answer_is_12901(upstream: UpstreamTLS) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = upstream.data_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    incoming.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ssl.SSLError) as info:
        client.do_handshake()
    assert classify_tls_error(info.value) == 12901
    assert "WRONG_VERSION_NUMBER" in verification_detail(info.value)


def test_non_ssl_errors_are_handshake_failures() -> None:
    assert classify_tls_error(ConnectionResetError(104, "reset")) == 12901
    assert verification_detail(ConnectionResetError(104, "reset")) == (
        "TLS handshake failed: [Errno 104] reset"
    )


# -- CertificateRequest detection -------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("verify_mode", [ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL])
def test_probe_sees_the_certificate_request(
    pki: TestPKI, upstream: UpstreamTLS, version: ssl.TLSVersion, verify_mode: ssl.VerifyMode
) -> None:
    server = server_context(
        pki.valid(), version=version, verify_mode=verify_mode, client_ca=pki.ca_cert
    )
    sslobj, client_exc, server_exc = handshake_in_memory(
        upstream.probe_context, server, "localhost"
    )
    assert client_cert_requested(sslobj)
    if verify_mode == ssl.CERT_OPTIONAL:
        assert (client_exc, server_exc) == (None, None)
    elif version == TLS12:
        # The server rejects the empty Certificate inside the handshake: the client's
        # handshake fails, after the request was already recorded.
        assert isinstance(client_exc, ssl.SSLError)
        assert isinstance(server_exc, ssl.SSLError)
        assert classify_tls_error(client_exc) == 12901
    else:
        # TLS 1.3: the client finishes first; only the server fails.
        assert client_exc is None
        assert isinstance(server_exc, ssl.SSLError)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_no_request_no_flag(pki: TestPKI, upstream: UpstreamTLS, version: ssl.TLSVersion) -> None:
    server = server_context(pki.valid(), version=version)
    sslobj, client_exc, _ = handshake_in_memory(upstream.probe_context, server, "localhost")
    assert client_exc is None
    assert not client_cert_requested(sslobj)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_data_context_also_detects_for_late_requests(
    pki: TestPKI, upstream: UpstreamTLS, version: ssl.TLSVersion
) -> None:
    # Pooled connections keep the hook, so a renegotiation or post-handshake request
    # for a certificate on an inspected connection is recognised (docs/ca.md).
    server = server_context(
        pki.valid(), version=version, verify_mode=ssl.CERT_OPTIONAL, client_ca=pki.ca_cert
    )
    sslobj, client_exc, _ = handshake_in_memory(upstream.data_context, server, "localhost")
    assert client_exc is None
    assert client_cert_requested(sslobj)
    assert upstream.data_context.post_handshake_auth


def test_flags_are_per_connection(pki: TestPKI, upstream: UpstreamTLS) -> None:
    asking = server_context(pki.valid(), verify_mode=ssl.CERT_OPTIONAL, client_ca=pki.ca_cert)
    plain = server_context(pki.valid())
    first, _, _ = handshake_in_memory(upstream.probe_context, asking, "localhost")
    second, _, _ = handshake_in_memory(upstream.probe_context, plain, "localhost")
    assert client_cert_requested(first)
    assert not client_cert_requested(second)


def test_request_is_seen_even_when_the_certificate_fails(
    pki: TestPKI, upstream: UpstreamTLS
) -> None:
    # TLS 1.3 sends the CertificateRequest before the Certificate: the flag is set even
    # though verification then fails.  (In TLS 1.2 the Certificate comes first.)
    server = server_context(
        pki.expired(), version=TLS13, verify_mode=ssl.CERT_REQUIRED, client_ca=pki.ca_cert
    )
    sslobj, client_exc, _ = handshake_in_memory(upstream.probe_context, server, "localhost")
    assert isinstance(client_exc, ssl.SSLCertVerificationError)
    assert client_cert_requested(sslobj)


def test_probe_and_data_contexts_settings(upstream: UpstreamTLS) -> None:
    assert upstream.detects_client_cert_requests
    for ctx in (upstream.probe_context, upstream.data_context):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname
        assert ctx.hostname_checks_common_name is False
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
        assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
    assert upstream.probe_context.options & ssl.OP_NO_TICKET
    import _ssl

    raw = _ssl._SSLContext._msg_callback  # set raw, without ssl.py's enum wrapper
    assert raw.__get__(upstream.probe_context) is not None
    assert raw.__get__(upstream.data_context) is not None


def test_self_test_reports_detection_works() -> None:
    assert certreq_detection_works()


# -- trust configuration --------------------------------------------------------------------


def test_system_trust_loads_the_system_store() -> None:
    with_system = UpstreamTLS(None, use_system_trust=True)
    without = UpstreamTLS(None, use_system_trust=False)
    assert with_system.data_context.cert_store_stats()["x509_ca"] > 0
    assert without.data_context.cert_store_stats()["x509_ca"] == 0


def test_ca_file_is_added_to_the_system_store(pki: TestPKI) -> None:
    system = UpstreamTLS(None, use_system_trust=True).data_context.cert_store_stats()["x509_ca"]
    both = UpstreamTLS(pki.ca_cert, use_system_trust=True)
    assert both.data_context.cert_store_stats()["x509_ca"] == system + 1
    assert both.probe_context.cert_store_stats()["x509_ca"] == system + 1


def test_ca_file_as_string(pki: TestPKI) -> None:
    assert UpstreamTLS(str(pki.ca_cert), False).ca_file == pki.ca_cert


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing.pem", "does not exist"),
        (lambda p: p, "is not a file"),
        (lambda p: _write(p / "empty.pem", b""), "no valid PEM certificate"),
        (lambda p: _write(p / "junk.pem", b"this is not a certificate\n"), "no valid PEM"),
    ],
)
def test_bad_ca_file_is_a_config_error(tmp_path: Path, make: object, words: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        UpstreamTLS(path, use_system_trust=False)
    assert str(path) in info.value.message
    assert words in info.value.message
    assert "\n" not in info.value.one_line()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
