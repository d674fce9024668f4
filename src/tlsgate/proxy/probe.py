"""``tlsgate probe``: connect to a server directly and report what tlsgate would see.

The probe handshakes exactly as an inspected CONNECT does (same trust, SNI, ALPN and
detection hook) and also records the handshake messages, so it can show the chain as
the server sent it and the CA names it accepts for client certificates.  When
verification fails it handshakes a second time without verification to show the chain.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tlsgate.errors import UpstreamError
from tlsgate.http1.target import Authority
from tlsgate.proxy.connection import Connection
from tlsgate.proxy.upstream import connect
from tlsgate.tls import messages
from tlsgate.tls.upstream import UpstreamTLS, classify_tls_error, verification_detail

_MSGS = "tlsgate_messages"


def _record(conn: Any, direction: str, version: Any, ctype: Any, mtype: Any, data: bytes) -> None:
    if (
        direction == "read"
        and ctype == 22
        and mtype in (messages.CERTIFICATE, messages.CERTIFICATE_REQUEST)
    ):
        try:
            getattr(conn, _MSGS).append((int(mtype), version == ssl.TLSVersion.TLSv1_3, data))
        except AttributeError:
            setattr(conn, _MSGS, [(int(mtype), version == ssl.TLSVersion.TLSv1_3, data)])


@dataclass
class CertInfo:
    subject: str
    issuer: str
    san: list[str]
    eku: list[str]
    not_before: str
    not_after: str
    serial: str


@dataclass
class ProbeReport:
    host: str
    port: int
    sni: str | None
    address: str = ""
    tls_version: str = ""
    cipher: str = ""
    alpn: str | None = None
    verified: bool = False
    status: int = 0
    """0 when the certificate verified, else the catalogue status (122xx)."""
    detail: str = ""
    chain: list[CertInfo] = field(default_factory=list)
    client_cert_requested: bool = False
    acceptable_cas: list[str] = field(default_factory=list)
    error: str = ""


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san = [str(v) for v in san_ext.get_values_for_type(x509.DNSName)]
        san += [str(v) for v in san_ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        san = []
    try:
        eku_ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = [getattr(o, "_name", o.dotted_string) for o in eku_ext]
    except x509.ExtensionNotFound:
        eku = []
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=san,
        eku=eku,
        not_before=f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
        not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        serial=f"{cert.serial_number:x}",
    )


async def _handshake(
    authority: Authority, ctx: ssl.SSLContext, sni: str | None, timeout: float
) -> tuple[Connection, BaseException | None]:
    conn = await connect(authority, timeout)
    try:
        await conn.start_tls(ctx, server_side=False, server_hostname=sni, timeout=timeout)
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        return conn, exc
    return conn, None


def _absorb(report: ProbeReport, conn: Connection) -> None:
    tls = conn.tls
    if tls is None:
        return
    for mtype, tls13, data in getattr(tls, _MSGS, []):
        try:
            if mtype == messages.CERTIFICATE and not report.chain:
                report.chain = [
                    _info(c) for c in messages.parse_certificate_message(data, tls13=tls13)
                ]
            elif mtype == messages.CERTIFICATE_REQUEST:
                report.client_cert_requested = True
                report.acceptable_cas = messages.certificate_request_authorities(data, tls13=tls13)
        except ValueError:
            continue
    if tls.version():
        report.tls_version = tls.version() or ""
        cipher = tls.cipher()
        report.cipher = cipher[0] if cipher else ""
        report.alpn = tls.selected_alpn_protocol()


async def probe(
    authority: Authority, trust: UpstreamTLS, *, sni: str | None, timeout: float = 10.0
) -> ProbeReport:
    """Probe ``authority``; ``trust`` must be this probe's own (its contexts get a hook)."""
    report = ProbeReport(authority.host, authority.port, sni)
    hooked = _hooked(trust.data_context, check=True)
    try:
        conn, exc = await _handshake(authority, hooked, sni, timeout)
    except UpstreamError as err:
        report.error, report.status = err.message, err.status
        return report
    report.address = conn.peer[0]
    _absorb(report, conn)
    conn.abort()
    if exc is None:
        report.verified = True
        return report
    if isinstance(exc, ssl.SSLCertVerificationError):
        report.status, report.detail = classify_tls_error(exc), verification_detail(exc)
        # Once more without verification, to show what the server presents.
        try:
            unverified = UpstreamTLS(trust.ca_file, trust.use_system_trust).data_context
            conn2, _ = await _handshake(authority, _hooked(unverified, check=False), sni, timeout)
        except UpstreamError:
            return report
        _absorb(report, conn2)
        conn2.abort()
    elif report.client_cert_requested:
        report.detail = f"the server ended the handshake without a client certificate ({exc})"
    else:
        report.status, report.detail = classify_tls_error(exc), str(exc)
    return report


def _hooked(ctx: ssl.SSLContext, *, check: bool) -> ssl.SSLContext:
    """``ctx`` (a context of this probe's own) with the recording hook, optionally unverified."""
    if not check:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx._msg_callback = _record  # type: ignore[attr-defined]  # private CPython hook
    return ctx


def run_probe(
    authority: Authority, trust: UpstreamTLS, sni: str | None, timeout: float
) -> ProbeReport:
    return asyncio.run(probe(authority, trust, sni=sni, timeout=timeout))
