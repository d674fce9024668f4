"""The inspection CA and the leaf certificates it signs for inspected hosts.

Owns the CA files in the home directory (``ca/ca.pem``, ``ca/ca.key``), creating them on
first start or replacing them with an imported enterprise sub-CA, and the leaves:
one ECDSA P-256 key shared by every leaf (``ca/leaf.key``), a PEM chain file per host
name in ``leaf-cache/`` and an in-memory LRU of server ``SSLContext`` objects.  No
sockets here: the proxy asks :meth:`LeafMinter.context_for` and does the handshake.
See docs/ca.md for the policy and the reasons behind it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import socket
import ssl
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsgate.config.home import Home
from tlsgate.errors import CertificateAuthorityError

CA_VALIDITY = dt.timedelta(days=3650)
CA_BACKDATE = dt.timedelta(days=1)
LEAF_BACKDATE = dt.timedelta(hours=1)
LEAF_MIN_REMAINING = dt.timedelta(days=2)
"""A leaf on disk is reused after a restart only while it has more than this left."""

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are not configurable and all fine).
SERVER_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

CAPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_NEW_CA_FIX = "delete both files to create a new CA, or run 'tlsgate ca import --cert F --key F'"


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA that signs leaves.  ``chain_pem`` is what the proxy sends after a leaf:
    the CA certificate, then its issuers when it is an imported enterprise sub-CA."""

    cert: x509.Certificate
    chain_pem: bytes
    key: CAPrivateKey
    cert_path: Path
    key_path: Path
    created: bool = False
    """True when :func:`load_or_create_ca` made this CA just now."""

    @property
    def fingerprint_sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def subject_text(self) -> str:
        return name_text(self.cert.subject)

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def key_type(self) -> str:
        return describe_key(self.key)

    @property
    def chain_length(self) -> int:
        """Certificates in ``chain_pem`` (1 for a self-signed tlsgate CA)."""
        return self.chain_pem.count(b"-----BEGIN CERTIFICATE-----")


def name_text(name: x509.Name) -> str:
    """RFC 4514 text of a name, with ``serialNumber`` spelled out (not 2.5.4.5)."""
    return name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})


def describe_key(key: CAPrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curve.get(key.curve.name, key.curve.name)}"
    return f"RSA {key.key_size}"


# -- files -----------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half.

    The temporary file is created with ``mode`` from the start (a private key is never
    readable by others, not even for a moment).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_or_raise(path: Path, data: bytes, mode: int, what: str) -> None:
    try:
        _write_atomic(path, data, mode)
    except OSError as exc:
        raise CertificateAuthorityError(
            f"cannot write {what} {path}: {exc.strerror}",
            fix="make the tlsgate home directory writable by this user",
        ) from None


def _read(path: Path, what: str, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateAuthorityError(
            f"cannot read {what} {path}: {exc.strerror}", fix=fix
        ) from None


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _parse_certs(data: bytes, path: Path, fix: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertificateAuthorityError(
            f"{path} is not a PEM or DER X.509 certificate file", fix=fix
        ) from None
    return certs


def _parse_key(data: bytes, path: Path, fix: str) -> CAPrivateKey:
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise CertificateAuthorityError(
            f"{path} is an encrypted private key",
            fix=f"decrypt it first: openssl pkey -in {path} -out plain.key",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateAuthorityError(
            f"{path} is not a PEM or DER private key", fix=fix
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateAuthorityError(
            f"{path}: the CA key must be ECDSA or RSA, not {type(key).__name__}",
            fix="use an ECDSA (P-256/P-384) or RSA (2048+) CA",
        )
    return key


def _same_public_key(cert: x509.Certificate, key: CAPrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _check_is_ca(cert: x509.Certificate, path: Path, fix: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateAuthorityError(
            f"{path}: certificate '{cert.subject.rfc4514_string()}' is not a CA "
            "(basicConstraints CA:TRUE is missing)",
            fix=fix,
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise CertificateAuthorityError(
            f"{path}: CA certificate '{cert.subject.rfc4514_string()}' may not sign "
            "certificates (keyUsage lacks keyCertSign)",
            fix=fix,
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# -- the CA ------------------------------------------------------------------------------


def _load(home: Home) -> CertificateAuthority:
    cert_path, key_path = home.ca_cert, home.ca_key
    certs = _parse_certs(_read(cert_path, "CA certificate", _NEW_CA_FIX), cert_path, _NEW_CA_FIX)
    key = _parse_key(_read(key_path, "CA key", _NEW_CA_FIX), key_path, _NEW_CA_FIX)
    cert = certs[0]
    if not _same_public_key(cert, key):
        raise CertificateAuthorityError(
            f"CA key {key_path} does not belong to the certificate {cert_path}",
            fix="restore the matching pair (see ca.pem.bak/ca.key.bak) or " + _NEW_CA_FIX,
        )
    _check_is_ca(cert, cert_path, _NEW_CA_FIX)
    if cert.not_valid_after_utc <= _now():
        raise CertificateAuthorityError(
            f"CA certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
            fix=_NEW_CA_FIX + " (clients must then trust the new CA)",
        )
    return CertificateAuthority(
        cert=cert,
        chain_pem=b"".join(_cert_pem(c) for c in certs),
        key=key,
        cert_path=cert_path,
        key_path=key_path,
    )


def _ca_name() -> x509.Name:
    host = socket.gethostname() or "localhost"
    cn = f"tlsgate inspection CA ({host})"
    if len(cn) > 64:  # ub-common-name
        cn = cn[:63] + ")"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            # Every CA gets a distinct subject: trust stores (Firefox's in particular)
            # misbehave when two CAs with one subject but different keys are installed.
            x509.NameAttribute(NameOID.SERIAL_NUMBER, secrets.token_hex(8)),
        ]
    )


def _create(home: Home) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _ca_name()
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    # Key first: a crash in between leaves a key without a certificate, reported clearly.
    _write_or_raise(home.ca_key, _key_pem(key), 0o600, "CA key")
    _write_or_raise(home.ca_cert, _cert_pem(cert), 0o644, "CA certificate")
    return CertificateAuthority(
        cert=cert,
        chain_pem=_cert_pem(cert),
        key=key,
        cert_path=home.ca_cert,
        key_path=home.ca_key,
        created=True,
    )


def load_or_create_ca(home: Home) -> CertificateAuthority:
    """The CA of ``home``; created (ECDSA P-256, 10 years) when neither file exists."""
    home.ensure()
    has_cert, has_key = home.ca_cert.exists(), home.ca_key.exists()
    if not has_cert and not has_key:
        return _create(home)
    if has_cert != has_key:
        present, missing = (home.ca_cert, home.ca_key) if has_cert else (home.ca_key, home.ca_cert)
        raise CertificateAuthorityError(
            f"{present} exists but {missing} is missing",
            fix="restore the missing file, or " + _NEW_CA_FIX,
        )
    return _load(home)


def import_ca(home: Home, cert_path: Path, key_path: Path) -> CertificateAuthority:
    """Make an existing CA (typically an enterprise sub-CA) tlsgate's CA.

    ``cert_path`` holds the CA certificate, optionally followed by its issuers (PEM);
    the certificate matching the key is used, the others form the chain sent to
    clients.  The previous files are kept as ``ca.pem.bak``/``ca.key.bak``, and the
    leaf cache is emptied.
    """
    fix = "give the CA certificate (PEM, optionally followed by its chain) and its key"
    certs = _parse_certs(_read(cert_path, "certificate file", fix), cert_path, fix)
    key_bytes = _read(key_path, "key file", fix)
    key = _parse_key(key_bytes, key_path, fix)
    matching = [c for c in certs if _same_public_key(c, key)]
    if not matching:
        raise CertificateAuthorityError(
            f"the key {key_path} does not match any certificate in {cert_path}",
            fix="give the key that belongs to the CA certificate",
        )
    cert = matching[0]
    _check_is_ca(cert, cert_path, fix="import a CA certificate, not a server or client one")
    if cert.not_valid_after_utc <= _now():
        raise CertificateAuthorityError(
            f"{cert_path}: CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}",
            fix="import a CA certificate that is still valid",
        )
    chain = [cert] + [c for c in certs if c is not cert]
    chain_pem = b"".join(_cert_pem(c) for c in chain)

    home.ensure()
    for current, mode in ((home.ca_cert, 0o644), (home.ca_key, 0o600)):
        if current.exists():
            old = _read(current, "current CA file", "check the home directory's permissions")
            backup = current.with_name(current.name + ".bak")
            _write_or_raise(backup, old, mode, "backup")
    _write_or_raise(home.ca_key, _key_pem(key), 0o600, "CA key")
    _write_or_raise(home.ca_cert, chain_pem, 0o644, "CA certificate")
    clear_leaf_cache(home)
    return CertificateAuthority(
        cert=cert, chain_pem=chain_pem, key=key, cert_path=home.ca_cert, key_path=home.ca_key
    )


def export_ca(ca: CertificateAuthority, fmt: Literal["pem", "der"]) -> bytes:
    """The CA certificate to install in clients' trust stores (the CA alone, no issuers)."""
    if fmt == "pem":
        return ca.cert.public_bytes(serialization.Encoding.PEM)
    if fmt == "der":
        return ca.cert.public_bytes(serialization.Encoding.DER)
    raise ValueError(f"unknown format {fmt!r}; use 'pem' or 'der'")


def clear_leaf_cache(home: Home) -> int:
    """Delete every cached leaf chain file; returns how many were removed."""
    removed = 0
    if not home.leaf_cache.is_dir():
        return 0
    for path in home.leaf_cache.iterdir():
        if path.suffix == ".pem" and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# -- leaf names --------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def normalize_server_name(name: str) -> tuple[str, IPAddress | None]:
    """``(name, ip)``: a host name lower-cased without a trailing dot, or an IP literal
    (brackets stripped) in its canonical form.  ``ValueError`` when it is neither."""
    text = name.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if ":" not in text:
            raise ValueError(f"invalid host name {name!r}: brackets are only for IPv6")
    if "%" in text:
        raise ValueError(f"invalid host name {name!r}: IPv6 zone identifiers are not allowed")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is not None:
        return str(ip), ip
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"invalid host name {name!r}") from None
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid host name {name!r}")
    if labels[-1].isdigit():
        # "10.1" or "1.2.3" is an IPv4 address to a browser (WHATWG URL), never a name.
        raise ValueError(f"invalid host name {name!r}: looks like a partial IPv4 address")
    return host, None


def _cache_file_name(name: str, ip: IPAddress | None) -> str:
    # ':' would make IPv6 names awkward on some filesystems; '=' keeps both kinds apart.
    return f"ip={name.replace(':', '-')}.pem" if ip is not None else f"dns={name}.pem"


# -- leaves ------------------------------------------------------------------------------


def _load_or_create_leaf_key(path: Path) -> ec.EllipticCurvePrivateKey:
    fix = f"delete {path}; tlsgate creates a new leaf key on the next start"
    if path.exists():
        data = _read(path, "leaf key", fix)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CertificateAuthorityError(f"{path} is not a valid private key", fix=fix) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateAuthorityError(f"{path} is not an ECDSA key", fix=fix)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    _write_or_raise(path, _key_pem(key), 0o600, "leaf key")
    return key


def _signing_hash(key: CAPrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    return hashes.SHA256()


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


class LeafMinter:
    """Server ``SSLContext`` objects presenting a leaf certificate for a host name.

    Not thread-safe: the proxy calls it from its event loop only.  Signing a leaf
    takes about a millisecond (ECDSA), so it is done inline.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        home: Home,
        *,
        validity_days: int = 14,
        cache_size: int = 1024,
    ) -> None:
        if validity_days < 1:
            raise ValueError("validity_days must be at least 1")
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.ca = ca
        self.home = home.ensure()
        self.validity = dt.timedelta(days=validity_days)
        self.cache_size = cache_size
        self.leaf_key = _load_or_create_leaf_key(home.leaf_key)
        self._leaf_spki = self.leaf_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._aki = _aki(ca.cert)
        self._hash = _signing_hash(ca.key)
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self.minted = 0
        """Leaves signed by this minter."""
        self.cache_hits = 0
        """Contexts served from memory or built from a leaf cached on disk."""
        self.disk_hits = 0
        """Of ``cache_hits``: leaves reused from the disk cache."""

    def context_for(self, name: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``name`` (host name or IP literal).

        ``ValueError`` when ``name`` is not a valid host name or IP address.
        """
        # Fast path: cache keys are normalised names, and normalising is idempotent, so
        # a name found as-is needs no validation (most clients send lower-case SNI).
        ctx = self._contexts.get(name)
        if ctx is not None:
            self._contexts.move_to_end(name)
            self.cache_hits += 1
            return ctx
        key, ip = normalize_server_name(name)
        ctx = self._contexts.get(key)
        if ctx is not None:
            self._contexts.move_to_end(key)
            self.cache_hits += 1
            return ctx
        chain_file = self.home.leaf_cache / _cache_file_name(key, ip)
        if self._reusable(chain_file):
            self.cache_hits += 1
            self.disk_hits += 1
        else:
            leaf = self._mint(key, ip)
            _write_or_raise(chain_file, _cert_pem(leaf) + self.ca.chain_pem, 0o644, "leaf cache")
            self.minted += 1
        ctx = self._server_context(chain_file)
        self._contexts[key] = ctx
        if len(self._contexts) > self.cache_size:
            self._contexts.popitem(last=False)
        return ctx

    def __len__(self) -> int:
        return len(self._contexts)

    def _reusable(self, chain_file: Path) -> bool:
        """A leaf on disk is reused when it is ours: current CA and chain, current leaf
        key, and more than LEAF_MIN_REMAINING of validity left."""
        try:
            data = chain_file.read_bytes()
            leaf = x509.load_pem_x509_certificate(data)
        except (OSError, ValueError):
            return False
        if data != _cert_pem(leaf) + self.ca.chain_pem:
            return False
        spki = leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki != self._leaf_spki:
            return False
        if leaf.not_valid_after_utc - _now() <= LEAF_MIN_REMAINING:
            return False
        try:
            leaf.verify_directly_issued_by(self.ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _mint(self, name: str, ip: IPAddress | None) -> x509.Certificate:
        now = _now()
        not_after = min(now + self.validity, self.ca.not_after)
        san: x509.GeneralName = x509.IPAddress(ip) if ip is not None else x509.DNSName(name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self.ca.cert.subject)
            .public_key(self.leaf_key.public_key())
            # 127 random bits: a positive 16-byte serial that nobody can predict.
            .serial_number(secrets.randbits(127) | 1)
            .not_valid_before(now - LEAF_BACKDATE)
            .not_valid_after(not_after)
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
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.leaf_key.public_key()), False
            )
            .add_extension(self._aki, critical=False)
        )
        return builder.sign(self.ca.key, self._hash)

    def _server_context(self, chain_file: Path) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.set_ciphers(SERVER_CIPHERS)
        ctx.set_alpn_protocols(["http/1.1"])
        try:
            # ssl loads certificates from files only; hence the chain files on disk.
            ctx.load_cert_chain(chain_file, self.home.leaf_key)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateAuthorityError(
                f"cannot load leaf certificate {chain_file}: {exc}",
                fix=f"delete {self.home.leaf_cache} and {self.home.leaf_key}, then retry",
            ) from None
        return ctx
