"""A throwaway test PKI: a root CA, server certificates good and bad, client certificates.

``TestPKI(directory)`` makes everything in-process with ``cryptography`` (ECDSA P-256,
so it takes milliseconds) and writes PEM files that nginx, curl and Python's ``ssl``
read directly:

* ``ca_cert`` / ``ca_key`` — the root CA "tlsgate test CA" that tests trust;
* ``server(name, ...)`` — a server certificate issued by that CA (or by itself, or by a
  second CA nobody trusts), with SANs, validity and EKU under the caller's control;
* presets for the cases the proxy must tell apart: ``valid()``, ``expired()``,
  ``not_yet_valid()``, ``wrong_name()``, ``self_signed()``, ``untrusted()``,
  ``no_server_auth_eku()``;
* ``client(cn)`` — a client certificate (EKU clientAuth) issued by the test CA.

Valid certificates satisfy OpenSSL's strict checks (``VERIFY_X509_STRICT``): SKI/AKI,
a critical basicConstraints on the CA and leaves, keyUsage, SANs (never the CN).
Every method returns a ``CertPair`` of paths: ``cert`` (leaf only), ``key`` (PKCS#8,
unencrypted) and ``chain`` (leaf then issuer, as nginx's ``ssl_certificate`` wants).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "tlsgate test CA"
OTHER_CA_NAME = "tlsgate untrusted CA"
CLIENT_NAME = "tlsgate test client"
ORGANIZATION = "tlsgate tests"

# Names every "valid" server certificate carries; tests connect to 127.0.0.1 or localhost.
DEFAULT_SANS = ("localhost", "mtls.test", "plain.test")
DEFAULT_IP_SANS = ("127.0.0.1", "::1")

Issuer = Literal["ca", "self", "other"]


@dataclass(frozen=True)
class CertPair:
    """PEM files of one certificate: the leaf, its key, and leaf + issuer chain."""

    cert: Path
    key: Path
    chain: Path

    def load_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())


@dataclass(frozen=True)
class _Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _make_ca(common_name: str) -> _Authority:
    key = _new_key()
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _Authority(name=name, key=key, cert=cert)


class TestPKI:
    """A root CA and the certificates tests need, written as PEM files under ``directory``."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = _make_ca(CA_NAME)
        self._other_ca = _make_ca(OTHER_CA_NAME)
        self.ca_cert = self._write("ca.crt", _cert_pem(self._ca.cert))
        self.ca_key = self._write("ca.key", _key_pem(self._ca.key))
        # The CA that signs ``untrusted()``; tests must never add it to a trust store.
        self.other_ca_cert = self._write("other-ca.crt", _cert_pem(self._other_ca.cert))
        # One leaf key for every leaf: key generation is the only slow part and tests
        # never depend on leaves having distinct keys.
        self._leaf_key = _new_key()
        self._cache: dict[str, CertPair] = {}

    # -- general factories -----------------------------------------------------------

    def server(
        self,
        name: str,
        *,
        sans: Sequence[str] = DEFAULT_SANS,
        ip_sans: Sequence[str] = DEFAULT_IP_SANS,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: Issuer = "ca",
        eku_server_auth: bool = True,
    ) -> CertPair:
        """A server certificate named ``name`` (its CN and file stem).

        ``issuer`` is ``"ca"`` (the trusted test CA), ``"self"`` (self-signed) or
        ``"other"`` (a CA that is not trusted). With ``eku_server_auth=False`` the EKU
        is clientAuth only.
        """
        eku = (
            [ExtendedKeyUsageOID.SERVER_AUTH]
            if eku_server_auth
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        return self._leaf(
            name,
            common_name=name,
            sans=sans,
            ip_sans=ip_sans,
            not_before=not_before,
            not_after=not_after,
            issuer=issuer,
            eku=eku,
        )

    def client(self, cn: str = CLIENT_NAME) -> CertPair:
        """A client certificate (EKU clientAuth) with subject ``O=tlsgate tests, CN=cn``.

        Made once per ``cn``; nginx reports it as ``$ssl_client_s_dn`` =
        ``CN=<cn>,O=tlsgate tests``.
        """
        return self._once(
            f"client:{cn}",
            lambda: self._leaf(
                f"client-{cn.replace(' ', '_')}",
                common_name=cn,
                sans=(),
                ip_sans=(),
                not_before=None,
                not_after=None,
                issuer="ca",
                eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
            ),
        )

    # -- presets (cached: each is made once per TestPKI) ------------------------------

    def valid(self) -> CertPair:
        """localhost, mtls.test, plain.test, 127.0.0.1, ::1 — trusted and current."""
        return self._once("valid", lambda: self.server("valid"))

    def expired(self) -> CertPair:
        """Expired 30 days ago (past TMG's default 15-day grace period)."""
        now = _now()
        return self._once(
            "expired",
            lambda: self.server(
                "expired",
                not_before=now - dt.timedelta(days=400),
                not_after=now - dt.timedelta(days=30),
            ),
        )

    def not_yet_valid(self) -> CertPair:
        """Valid from 30 days in the future."""
        now = _now()
        return self._once(
            "not_yet_valid",
            lambda: self.server(
                "not_yet_valid",
                not_before=now + dt.timedelta(days=30),
                not_after=now + dt.timedelta(days=400),
            ),
        )

    def wrong_name(self) -> CertPair:
        """Trusted and current, but only for ``wrong.example`` (no IP SANs)."""
        return self._once(
            "wrong_name", lambda: self.server("wrong_name", sans=("wrong.example",), ip_sans=())
        )

    def self_signed(self) -> CertPair:
        return self._once("self_signed", lambda: self.server("self_signed", issuer="self"))

    def untrusted(self) -> CertPair:
        """Issued by "tlsgate untrusted CA", which nobody trusts."""
        return self._once("untrusted", lambda: self.server("untrusted", issuer="other"))

    def no_server_auth_eku(self) -> CertPair:
        """Trusted and current, but its EKU is clientAuth only."""
        return self._once(
            "no_server_auth_eku",
            lambda: self.server("no_server_auth_eku", eku_server_auth=False),
        )

    PRESETS: tuple[str, ...] = (
        "valid",
        "expired",
        "not_yet_valid",
        "wrong_name",
        "self_signed",
        "untrusted",
        "no_server_auth_eku",
    )

    def preset(self, name: str) -> CertPair:
        """A preset by name (one of ``PRESETS``)."""
        if name not in self.PRESETS:
            raise ValueError(f"unknown certificate preset {name!r}; one of {self.PRESETS}")
        pair: CertPair = getattr(self, name)()
        return pair

    # -- internals -------------------------------------------------------------------

    def _once(self, key: str, make: Callable[[], CertPair]) -> CertPair:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _leaf(
        self,
        stem: str,
        *,
        common_name: str,
        sans: Sequence[str],
        ip_sans: Sequence[str],
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
        issuer: Issuer,
        eku: list[x509.ObjectIdentifier],
    ) -> CertPair:
        key = self._leaf_key
        subject = _name(common_name)
        if issuer == "ca":
            authority: _Authority | None = self._ca
        elif issuer == "other":
            authority = self._other_ca
        elif issuer == "self":
            authority = None
        else:
            raise ValueError(f"issuer must be 'ca', 'self' or 'other', not {issuer!r}")
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        if authority is None:
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
            issuer_name, signing_key = subject, key
        else:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key())
            issuer_name, signing_key = authority.name, authority.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in sans]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(signing_key, hashes.SHA256())

        cert_pem = _cert_pem(cert)
        chain_pem = cert_pem + (_cert_pem(authority.cert) if authority is not None else b"")
        pair = CertPair(
            cert=self._write(f"{stem}.crt", cert_pem),
            key=self._write(f"{stem}.key", _key_pem(key)),
            chain=self._write(f"{stem}.chain.pem", chain_pem),
        )
        return pair

    def _write(self, filename: str, data: bytes) -> Path:
        path = self.directory / filename
        path.write_bytes(data)
        path.chmod(0o644)  # nginx workers and the postgres user may read them
        return path
