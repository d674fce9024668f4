"""TLS towards upstream servers: the shared client contexts, client-certificate request
detection and the mapping of handshake errors to the status catalogue.

Two contexts are built once per trust configuration (building one with the system
store costs ~24 ms): ``probe_context`` carries a message hook that notices a
CertificateRequest; ``data_context`` is identical without it, and the IO layer swaps a
connection to it after the handshake because the hook costs ~35% CPU on bulk data.
Facts and measurements: docs/ca.md and /work/shared/research/mtls-detection.md.
"""

from __future__ import annotations

import _ssl
import contextlib
import datetime as dt
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tlsgate.errors import ConfigError

CERTREQ_ATTR = "tlsgate_certreq"
"""Attribute set to True on an SSLObject whose server sent a CertificateRequest."""

_HANDSHAKE = 22
_CERTIFICATE_REQUEST = 13

# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) -> status catalogue.
_VERIFY_STATUS: dict[int, int] = {
    9: 12224,  # CERT_NOT_YET_VALID
    10: 12225,  # CERT_HAS_EXPIRED
    2: 12226,  # UNABLE_TO_GET_ISSUER_CERT
    18: 12226,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: 12226,  # SELF_SIGNED_CERT_IN_CHAIN
    20: 12226,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: 12226,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    27: 12226,  # CERT_UNTRUSTED
    28: 12226,  # CERT_REJECTED
    62: 12227,  # HOSTNAME_MISMATCH
    64: 12227,  # IP_ADDRESS_MISMATCH
    26: 12228,  # INVALID_PURPOSE (no serverAuth EKU)
    23: 12230,  # CERT_REVOKED
}
VERIFY_FAILED = 12902
HANDSHAKE_FAILED = 12901


def _on_tls_message(
    conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: bytes
) -> None:
    """Private CPython hook, called for every TLS message and record header.

    Only records a flag: an exception raised here is delayed, and lost altogether in a
    non-blocking TLS 1.2 handshake.  TLS 1.3 reports the CertificateRequest decrypted.
    """
    if content_type == _HANDSHAKE and msg_type == _CERTIFICATE_REQUEST and direction == "read":
        # An object without a __dict__ cannot carry the flag; never raise in the hook.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(conn, CERTREQ_ATTR, True)


def _install_hook(ctx: ssl.SSLContext) -> bool:
    """Set the private message hook without ssl.py's wrapper (which builds three enums per
    call: ~40 us per handshake and ~35% CPU on bulk data).  False if this Python lacks it."""
    descriptor = getattr(_ssl._SSLContext, "_msg_callback", None)
    if descriptor is None:
        return False
    # _msg_callback is private CPython API (no public hook reports a CertificateRequest);
    # proven by tests/unit/test_upstream_tls.py and the end-to-end tests.
    descriptor.__set__(ctx, _on_tls_message)
    return True


def client_cert_requested(sslobj: object) -> bool:
    """Whether the server of this SSLObject (or SSLSocket) sent a CertificateRequest
    during the handshake so far; valid after a completed or a failed handshake."""
    # Through __dict__: a getattr with a default raises and swallows an AttributeError
    # when the flag is absent (asked once per proxied response: ~4,000 instructions).
    flags = getattr(sslobj, "__dict__", None)
    return flags is not None and flags.get(CERTREQ_ATTR) is True


def _client_context(ca_file: Path | None, use_system_trust: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.hostname_checks_common_name = False
    # Strict X.509 (RFC 5280) agrees with browsers on more x509-limbo cases.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    if use_system_trust:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        _load_ca_file(ctx, ca_file)
    return ctx


def _load_ca_file(ctx: ssl.SSLContext, ca_file: Path) -> None:
    fix = "give a readable PEM file of CA certificates (upstream.ca_file / --upstream-ca)"
    if not ca_file.is_file():
        what = "is not a file" if ca_file.exists() else "does not exist"
        raise ConfigError(f"upstream CA file {ca_file} {what}", fix=fix)
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"upstream CA file {ca_file} holds no valid PEM certificate ({exc.reason})", fix=fix
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read upstream CA file {ca_file}: {exc.strerror}", fix=fix
        ) from None


class UpstreamTLS:
    """The client contexts for upstream servers, for one trust configuration."""

    def __init__(
        self, ca_file: Path | str | None, use_system_trust: bool = True, detect: bool = True
    ) -> None:
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self.use_system_trust = use_system_trust
        self.probe_context = _client_context(self.ca_file, use_system_trust)
        # Sessions are never resumed on the probe: a resumed handshake carries no
        # CertificateRequest, so the probe would miss it.
        self.probe_context.options |= ssl.OP_NO_TICKET
        self.data_context = _client_context(self.ca_file, use_system_trust)
        # Offer TLS 1.3 post-handshake auth, so that a server asking for a certificate
        # later (per path, as IIS and Apache do) asks us and we can say why it failed;
        # without the offer such servers answer a bare 403.
        self.probe_context.post_handshake_auth = True
        self.data_context.post_handshake_auth = True
        self.detects_client_cert_requests = detect and _install_hook(self.probe_context)
        # The data context keeps the hook for late requests (TLS 1.2 renegotiation,
        # TLS 1.3 post-handshake auth); set raw it costs ~5% on bulk data, not ~35%.
        if self.detects_client_cert_requests:
            _install_hook(self.data_context)


def classify_tls_error(exc: BaseException) -> int:
    """The catalogue status of a failed upstream handshake.

    Certificate verification failures map to TMG's 1222x codes where one exists,
    otherwise 12902; any other failure of the handshake is 12901.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_STATUS.get(exc.verify_code, VERIFY_FAILED)
    return HANDSHAKE_FAILED


def verification_detail(exc: BaseException) -> str:
    """One line saying why the handshake failed (OpenSSL's verify message if any)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = f"certificate verify failed: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError) and exc.reason:
        text = f"TLS handshake failed: {exc.reason}"
    else:
        text = f"TLS handshake failed: {exc}" if str(exc) else f"TLS handshake failed: {exc!r}"
    return " ".join(text.split())


# -- in-memory handshakes and the detection self-test -------------------------------------


def handshake_in_memory(
    client_ctx: ssl.SSLContext,
    server_ctx: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[ssl.SSLObject, BaseException | None, BaseException | None]:
    """Run a TLS handshake between two SSLObjects over memory BIOs (no sockets).

    Returns the client SSLObject and the exception each side ended with (None when
    its handshake completed).  Used by the self-test and the tests.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    errors: list[BaseException | None] = [None, None]
    finished = [False, False]
    for _ in range(64):  # a handshake is a handful of flights; bounded in case of a bug
        for i, obj in enumerate((client, server)):
            if finished[i] or errors[i] is not None:
                continue
            try:
                obj.do_handshake()
                finished[i] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as exc:
                errors[i] = exc
        moved = False
        for src, dst in ((c_out, s_in), (s_out, c_in)):
            data = src.read()
            if data:
                dst.write(data)
                moved = True
        if not moved:  # neither side wrote: nothing more can happen
            break
    else:
        raise RuntimeError("in-memory TLS handshake did not settle")
    return client, errors[0], errors[1]


def _throwaway_server_context(directory: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsgate self-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    pem = directory / "selftest.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    ctx.minimum_version = ctx.maximum_version = version
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def certreq_detection_works() -> bool:
    """Self-test (a few ms, in memory): does this Python's hook report a
    CertificateRequest in TLS 1.2 and 1.3?  Run at start-up; when False, the proxy
    cannot tell client-certificate servers apart and should say so."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not hasattr(client, "_msg_callback"):
        return False
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # a throwaway self-signed server
    client._msg_callback = _on_tls_message  # private hook (see UpstreamTLS); hasattr above
    with tempfile.TemporaryDirectory(prefix="tlsgate-selftest-") as tmp:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            server = _throwaway_server_context(Path(tmp), version)
            sslobj, _, _ = handshake_in_memory(client, server, None)
            if not client_cert_requested(sslobj):
                return False
    return True
