"""The inspection CA and its leaves: creation, loading, import of an enterprise sub-CA,
export, leaf minting and caching, and the ``tlsgate ca`` commands.

Leaves are checked the way clients see them: an in-memory TLS handshake (memory BIOs, no
sockets) against a strict verifying client that trusts only the CA under test.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pty
import ssl
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsgate.commands.ca import ca as ca_group
from tlsgate.config.home import Home
from tlsgate.errors import CertificateAuthorityError, ConfigError, UsageError
from tlsgate.tls.ca import (
    CertificateAuthority,
    LeafMinter,
    export_ca,
    import_ca,
    load_or_create_ca,
    normalize_server_name,
)
from tlsgate.tls.upstream import UpstreamTLS, handshake_in_memory

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def authority(home: Home) -> CertificateAuthority:
    return load_or_create_ca(home)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def trusting_client(trust_pem: bytes, tmp_path: Path) -> ssl.SSLContext:
    """A strict verifying client (tlsgate's own upstream settings) trusting ``trust_pem``."""
    ca_file = tmp_path / f"trust-{os.urandom(4).hex()}.pem"
    ca_file.write_bytes(trust_pem)
    return UpstreamTLS(ca_file, use_system_trust=False).data_context


def served_chain(sslobj: ssl.SSLObject) -> x509.Certificate:
    der = sslobj.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# -- a test PKI for imports ---------------------------------------------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    cn: str,
    *,
    issuer: Issued | None = None,
    ca: bool = True,
    key_cert_sign: bool = True,
    with_key_usage: bool = True,
    not_after: dt.datetime | None = None,
    rsa_key: bool = False,
) -> Issued:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=0 if issuer else None), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if with_key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca and key_cert_sign,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@pytest.fixture(scope="module")
def enterprise() -> tuple[Issued, Issued]:
    """(root, sub-CA): an enterprise root and the sub-CA it issued for tlsgate."""
    root = issue("Example Corp Root CA")
    sub = issue("Example Corp tlsgate sub-CA", issuer=root)
    return root, sub


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- creating and loading ----------------------------------------------------------------


def test_first_start_creates_the_ca(home: Home) -> None:
    ca = load_or_create_ca(home)
    assert ca.created
    cert = ca.cert
    assert home.ca_cert.read_bytes() == ca.chain_pem
    assert mode(home.ca_key) == 0o600
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"
    assert ca.key_type == "ECDSA P-256"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str) and cn.startswith("tlsgate inspection CA (")
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "tlsgate"
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    assert dt.timedelta(hours=23) < NOW - ca.not_before < dt.timedelta(hours=25)
    assert dt.timedelta(days=3649) < ca.not_after - NOW < dt.timedelta(days=3651)
    assert ca.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert len(ca.fingerprint_sha256) == 32 * 3 - 1
    assert "CN=tlsgate inspection CA" in ca.subject_text
    assert ca.chain_length == 1


def test_key_is_private_even_with_a_permissive_umask(home: Home) -> None:
    old = os.umask(0)
    try:
        load_or_create_ca(home)
        LeafMinter(load_or_create_ca(home), home)
    finally:
        os.umask(old)
    assert mode(home.ca_key) == 0o600
    assert mode(home.leaf_key) == 0o600
    assert not [p for p in home.ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_second_start_loads_the_same_ca(home: Home) -> None:
    first = load_or_create_ca(home)
    second = load_or_create_ca(home)
    assert not second.created
    assert second.fingerprint_sha256 == first.fingerprint_sha256


def test_every_new_ca_has_its_own_subject(tmp_path: Path) -> None:
    a = load_or_create_ca(Home(tmp_path / "a"))
    b = load_or_create_ca(Home(tmp_path / "b"))
    assert a.cert.subject != b.cert.subject
    assert a.cert.serial_number != b.cert.serial_number


def test_corrupt_certificate(home: Home, authority: CertificateAuthority) -> None:
    home.ca_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateAuthorityError) as info:
        load_or_create_ca(home)
    assert str(home.ca_cert) in info.value.message
    assert info.value.fix and "tlsgate ca import" in info.value.fix


def test_corrupt_key(home: Home, authority: CertificateAuthority) -> None:
    home.ca_key.write_bytes(b"not a key")
    with pytest.raises(CertificateAuthorityError, match="not a PEM or DER private key"):
        load_or_create_ca(home)


def test_key_of_another_ca(tmp_path: Path, home: Home, authority: CertificateAuthority) -> None:
    other = Home(tmp_path / "other")
    load_or_create_ca(other)
    home.ca_key.write_bytes(other.ca_key.read_bytes())
    with pytest.raises(CertificateAuthorityError, match="does not belong"):
        load_or_create_ca(home)


def test_missing_key(home: Home, authority: CertificateAuthority) -> None:
    home.ca_key.unlink()
    with pytest.raises(CertificateAuthorityError, match="is missing"):
        load_or_create_ca(home)
    assert not home.ca_key.exists()  # never silently replaced


def test_unreadable_certificate(home: Home, authority: CertificateAuthority) -> None:
    home.ca_cert.unlink()
    home.ca_cert.mkdir()  # reading a directory fails even as root
    with pytest.raises(CertificateAuthorityError, match="cannot read CA certificate"):
        load_or_create_ca(home)


def test_expired_ca_on_disk(home: Home) -> None:
    old = issue("old CA", not_after=NOW - dt.timedelta(days=1))
    home.ensure()
    write(home.ca_cert, old.pem)
    write(home.ca_key, old.key_pem)
    with pytest.raises(CertificateAuthorityError, match="expired"):
        load_or_create_ca(home)


def test_home_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        load_or_create_ca(Home(blocker / "home"))
    assert "cannot create home directory" in str(info.value)


# -- export ----------------------------------------------------------------------------------


def test_export_pem_and_der(authority: CertificateAuthority) -> None:
    pem = export_ca(authority, "pem")
    der = export_ca(authority, "der")
    assert x509.load_pem_x509_certificate(pem) == authority.cert
    assert x509.load_der_x509_certificate(der) == authority.cert
    assert pem.count(b"BEGIN CERTIFICATE") == 1


# -- import ----------------------------------------------------------------------------------


def test_import_enterprise_sub_ca_with_chain(
    home: Home, authority: CertificateAuthority, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, sub = enterprise
    minter = LeafMinter(authority, home)
    minter.context_for("before.example")
    assert list(home.leaf_cache.iterdir())
    old_cert, old_key = home.ca_cert.read_bytes(), home.ca_key.read_bytes()

    cert_file = write(tmp_path / "sub-chain.pem", sub.pem + root.pem)
    key_file = write(tmp_path / "sub.key", sub.key_pem)
    imported = import_ca(home, cert_file, key_file)

    assert imported.cert == sub.cert
    assert imported.chain_pem == sub.pem + root.pem
    assert imported.chain_length == 2
    assert home.ca_cert.read_bytes() == sub.pem + root.pem
    assert mode(home.ca_key) == 0o600
    assert (home.ca_dir / "ca.pem.bak").read_bytes() == old_cert
    assert (home.ca_dir / "ca.key.bak").read_bytes() == old_key
    assert mode(home.ca_dir / "ca.key.bak") == 0o600
    assert not list(home.leaf_cache.iterdir())
    assert load_or_create_ca(home).fingerprint_sha256 == imported.fingerprint_sha256

    # Clients that trust only the enterprise root accept tlsgate's leaves: the chain
    # (leaf, sub-CA) is served and the root anchors it.
    new_minter = LeafMinter(load_or_create_ca(home), home)
    client = trusting_client(root.pem, tmp_path)
    sslobj, client_exc, _ = handshake_in_memory(
        client, new_minter.context_for("intranet.example"), "intranet.example"
    )
    assert client_exc is None
    assert served_chain(sslobj).issuer == sub.cert.subject


def test_import_chain_in_any_order_and_der(
    home: Home, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, sub = enterprise
    reversed_file = write(tmp_path / "reversed.pem", root.pem + sub.pem)
    imported = import_ca(home, reversed_file, write(tmp_path / "k.pem", sub.key_pem))
    assert imported.cert == sub.cert
    assert imported.chain_pem == sub.pem + root.pem
    der_file = write(tmp_path / "root.der", root.cert.public_bytes(serialization.Encoding.DER))
    der_key = write(
        tmp_path / "root.key.der",
        root.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    assert import_ca(home, der_file, der_key).cert == root.cert


def test_import_rsa_ca_signs_leaves(home: Home, tmp_path: Path) -> None:
    rsa_ca = issue("RSA CA", rsa_key=True)
    imported = import_ca(
        home, write(tmp_path / "c.pem", rsa_ca.pem), write(tmp_path / "k.pem", rsa_ca.key_pem)
    )
    assert imported.key_type == "RSA 2048"
    minter = LeafMinter(imported, home)
    sslobj, client_exc, _ = handshake_in_memory(
        trusting_client(rsa_ca.pem, tmp_path), minter.context_for("rsa.example"), "rsa.example"
    )
    assert client_exc is None
    assert isinstance(served_chain(sslobj).public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: issue("leaf.example", ca=False), "is not a CA"),
        (lambda: issue("no-sign CA", key_cert_sign=False), "keyCertSign"),
        (lambda: issue("expired CA", not_after=NOW - dt.timedelta(days=1)), "expired"),
    ],
)
def test_import_rejects_unsuitable_certificates(
    home: Home, tmp_path: Path, make: object, words: str
) -> None:
    bad: Issued = make()  # type: ignore[operator]
    with pytest.raises(CertificateAuthorityError, match=words):
        import_ca(home, write(tmp_path / "c.pem", bad.pem), write(tmp_path / "k.pem", bad.key_pem))
    assert not home.ca_cert.exists()


def test_import_accepts_ca_without_key_usage(home: Home, tmp_path: Path) -> None:
    old_style = issue("old-style CA", with_key_usage=False)
    imported = import_ca(
        home, write(tmp_path / "c.pem", old_style.pem), write(tmp_path / "k.pem", old_style.key_pem)
    )
    assert imported.cert == old_style.cert


def test_import_rejects_a_key_that_does_not_match(
    home: Home, authority: CertificateAuthority, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, sub = enterprise
    before = home.ca_cert.read_bytes()
    with pytest.raises(CertificateAuthorityError, match="does not match"):
        import_ca(home, write(tmp_path / "c.pem", sub.pem), write(tmp_path / "k.pem", root.key_pem))
    assert home.ca_cert.read_bytes() == before  # nothing replaced
    assert not (home.ca_dir / "ca.pem.bak").exists()


def test_import_rejects_encrypted_key_and_garbage(
    home: Home, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    _, sub = enterprise
    encrypted = sub.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    cert_file = write(tmp_path / "c.pem", sub.pem)
    with pytest.raises(CertificateAuthorityError, match="encrypted"):
        import_ca(home, cert_file, write(tmp_path / "enc.pem", encrypted))
    with pytest.raises(CertificateAuthorityError, match=r"not a PEM or DER X\.509"):
        import_ca(home, write(tmp_path / "junk.pem", b"junk"), write(tmp_path / "k", sub.key_pem))
    with pytest.raises(CertificateAuthorityError, match="cannot read"):
        import_ca(home, tmp_path / "missing.pem", write(tmp_path / "k2", sub.key_pem))


# -- leaf names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("localhost", "localhost"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_valid_names(given: str, expected: str) -> None:
    assert normalize_server_name(given)[0] == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "a..b",
        "-a.example",
        "a-.example",
        "exa mple.com",
        "*.example.com",
        "example.com/path",
        "user@example.com",
        "1.2.3",
        "10.1",
        "[example.com]",
        "[127.0.0.1]",
        "fe80::1%eth0",
        "a" * 64 + ".example",
        ".".join(["abcdefgh"] * 30),
        "example.com:443",
    ],
)
def test_invalid_names_raise_value_error(
    authority: CertificateAuthority, home: Home, bad: str
) -> None:
    with pytest.raises(ValueError):
        normalize_server_name(bad)
    with pytest.raises(ValueError):
        LeafMinter(authority, home).context_for(bad)


# -- leaves ------------------------------------------------------------------------------------


def _leaf_of(
    minter: LeafMinter, name: str, tmp_path: Path, hostname: str | None = None
) -> x509.Certificate:
    client = trusting_client(minter.ca.chain_pem, tmp_path)
    client.set_alpn_protocols(["h2", "http/1.1"])
    sslobj, client_exc, server_exc = handshake_in_memory(
        client, minter.context_for(name), hostname or name
    )
    assert (client_exc, server_exc) == (None, None)
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    return served_chain(sslobj)


def test_leaf_for_a_host_name(authority: CertificateAuthority, home: Home, tmp_path: Path) -> None:
    minter = LeafMinter(authority, home)
    leaf = _leaf_of(minter, "www.example.com", tmp_path)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == []
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.com"
    assert leaf.issuer == authority.cert.subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 0 < leaf.serial_number < 1 << 128
    assert (
        dt.timedelta(minutes=59)
        < dt.datetime.now(dt.UTC) - leaf.not_valid_before_utc
        < dt.timedelta(minutes=61)
    )
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(days=14, hours=1)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_leaf_serials_are_random(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    minter = LeafMinter(authority, home)
    serials = {_leaf_of(minter, f"h{i}.example", tmp_path).serial_number for i in range(5)}
    assert len(serials) == 5
    assert max(s.bit_length() for s in serials) > 100


@pytest.mark.parametrize(
    ("name", "hostname", "ip"),
    [("127.0.0.1", "127.0.0.1", "127.0.0.1"), ("[::1]", "::1", "::1"), ("::1", "::1", "::1")],
)
def test_leaf_for_an_ip_literal(
    authority: CertificateAuthority, home: Home, tmp_path: Path, name: str, hostname: str, ip: str
) -> None:
    leaf = _leaf_of(LeafMinter(authority, home), name, tmp_path, hostname)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip)]
    assert san.get_values_for_type(x509.DNSName) == []


def test_long_name_truncates_the_cn_only(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    name = "a" * 60 + "." + "b" * 60 + ".example"
    leaf = _leaf_of(LeafMinter(authority, home), name, tmp_path)
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == name[:64]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]


def test_leaf_is_not_valid_for_another_name(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    client = trusting_client(authority.chain_pem, tmp_path)
    ctx = LeafMinter(authority, home).context_for("one.example")
    _, client_exc, _ = handshake_in_memory(client, ctx, "two.example")
    assert isinstance(client_exc, ssl.SSLCertVerificationError)


def test_leaf_never_outlives_the_ca(home: Home, tmp_path: Path) -> None:
    ca_end = (NOW + dt.timedelta(days=5)).replace(microsecond=0)
    short = issue("short-lived CA", not_after=ca_end)
    imported = import_ca(
        home, write(tmp_path / "c.pem", short.pem), write(tmp_path / "k.pem", short.key_pem)
    )
    leaf = _leaf_of(LeafMinter(imported, home), "short.example", tmp_path)
    assert leaf.not_valid_after_utc == ca_end


def test_server_context_settings(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    ctx = LeafMinter(authority, home).context_for("settings.example")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    old = trusting_client(authority.chain_pem, tmp_path)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    _, client_exc, _ = handshake_in_memory(old, ctx, "settings.example")
    assert isinstance(client_exc, ssl.SSLError)
    tls12 = trusting_client(authority.chain_pem, tmp_path)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    sslobj, client_exc, _ = handshake_in_memory(tls12, ctx, "settings.example")
    assert client_exc is None and sslobj.version() == "TLSv1.2"
    assert "ECDHE-ECDSA" in (sslobj.cipher() or ("",))[0]


def test_one_leaf_key_for_all_leaves(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    minter = LeafMinter(authority, home)
    a = _leaf_of(minter, "a.example", tmp_path)
    b = _leaf_of(minter, "b.example", tmp_path)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert a.public_key().public_bytes(der, spki) == b.public_key().public_bytes(der, spki)
    assert mode(home.leaf_key) == 0o600
    # A restart keeps the same key.
    again = LeafMinter(authority, home)
    assert again.leaf_key.private_numbers() == minter.leaf_key.private_numbers()


def test_memory_cache_and_counters(authority: CertificateAuthority, home: Home) -> None:
    minter = LeafMinter(authority, home, cache_size=2)
    first = minter.context_for("a.example")
    assert (minter.minted, minter.cache_hits) == (1, 0)
    assert minter.context_for("A.Example.") is first
    assert (minter.minted, minter.cache_hits) == (1, 1)
    minter.context_for("b.example")
    minter.context_for("a.example")  # a is now the most recent
    minter.context_for("c.example")  # evicts b
    assert len(minter) == 2
    assert minter.context_for("a.example") is first
    assert minter.minted == 3
    b_again = minter.context_for("b.example")  # rebuilt from the disk cache, not re-signed
    assert minter.minted == 3
    assert minter.disk_hits == 1
    assert b_again is not first


def test_disk_cache_survives_a_restart(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    minter = LeafMinter(authority, home)
    before = _leaf_of(minter, "restart.example", tmp_path)
    assert minter.minted == 1
    restarted = LeafMinter(load_or_create_ca(home), home)
    after = _leaf_of(restarted, "restart.example", tmp_path)
    assert (restarted.minted, restarted.disk_hits) == (0, 1)
    assert after == before


def test_disk_cache_not_reused_near_expiry(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    LeafMinter(authority, home, validity_days=2).context_for("short.example")
    restarted = LeafMinter(authority, home)
    leaf = _leaf_of(restarted, "short.example", tmp_path)
    assert restarted.minted == 1
    assert leaf.not_valid_after_utc - NOW > dt.timedelta(days=13)


def test_disk_cache_not_reused_after_the_ca_changed(
    home: Home, authority: CertificateAuthority, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    LeafMinter(authority, home).context_for("change.example")
    cached = list(home.leaf_cache.iterdir())
    # Put the old leaf back after an import emptied the cache: it must not be served.
    saved = {p.name: p.read_bytes() for p in cached}
    root, sub = enterprise
    imported = import_ca(
        home, write(tmp_path / "c.pem", sub.pem + root.pem), write(tmp_path / "k.pem", sub.key_pem)
    )
    for name, data in saved.items():
        (home.leaf_cache / name).write_bytes(data)
    minter = LeafMinter(imported, home)
    leaf = _leaf_of(minter, "change.example", tmp_path)
    assert minter.minted == 1
    assert leaf.issuer == sub.cert.subject


def test_disk_cache_not_reused_with_a_new_leaf_key(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    LeafMinter(authority, home).context_for("rekey.example")
    home.leaf_key.unlink()
    minter = LeafMinter(authority, home)
    _leaf_of(minter, "rekey.example", tmp_path)  # handshake proves key and cert match
    assert minter.minted == 1


def test_corrupt_leaf_cache_file_is_replaced(
    authority: CertificateAuthority, home: Home, tmp_path: Path
) -> None:
    LeafMinter(authority, home).context_for("corrupt.example")
    (path,) = home.leaf_cache.iterdir()
    path.write_bytes(b"garbage")
    minter = LeafMinter(authority, home)
    _leaf_of(minter, "corrupt.example", tmp_path)
    assert minter.minted == 1


def test_corrupt_leaf_key_is_a_clear_error(authority: CertificateAuthority, home: Home) -> None:
    LeafMinter(authority, home)
    home.leaf_key.write_bytes(b"garbage")
    with pytest.raises(CertificateAuthorityError) as info:
        LeafMinter(authority, home)
    assert info.value.fix and str(home.leaf_key) in info.value.fix


def test_ipv4_and_ipv6_cache_files_do_not_collide(
    authority: CertificateAuthority, home: Home
) -> None:
    minter = LeafMinter(authority, home)
    for name in ("::1", "__1", "127.0.0.1", "1.example"):
        minter.context_for(name)
    assert minter.minted == 4
    assert len(list(home.leaf_cache.iterdir())) == 4


# -- tlsgate ca ------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str, BaseException | None]:
    runner = CliRunner()
    result = runner.invoke(ca_group, list(args), catch_exceptions=True)
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, result.stderr, exc


def test_cli_show_creates_and_describes(home: Home) -> None:
    code, out, _, exc = run_cli("show", "--home", str(home.root))
    assert (code, exc) == (0, None)
    ca = load_or_create_ca(home)
    assert "Created a new CA" in out
    assert ca.fingerprint_sha256 in out
    assert ca.subject_text in out
    assert "ECDSA P-256" in out
    assert str(home.ca_cert) in out and str(home.ca_key) in out
    assert "docs/ca.md" in out
    code, out, _, _ = run_cli("show", "--home", str(home.root))
    assert code == 0 and "Created a new CA" not in out


def test_cli_export_pem_to_stdout(home: Home, authority: CertificateAuthority) -> None:
    code, out, _, exc = run_cli("export", "--home", str(home.root))
    assert (code, exc) == (0, None)
    assert out.encode() == export_ca(authority, "pem")


def test_cli_export_der_to_file(
    home: Home, authority: CertificateAuthority, tmp_path: Path
) -> None:
    out_file = tmp_path / "ca.der"
    code, _, err, exc = run_cli(
        "export", "--format", "der", "--out", str(out_file), "--home", str(home.root)
    )
    assert (code, exc) == (0, None)
    assert x509.load_der_x509_certificate(out_file.read_bytes()) == authority.cert
    assert str(out_file) in err


def test_cli_export_der_refuses_a_terminal(home: Home, authority: CertificateAuthority) -> None:
    # A real pseudo-terminal on stdout: the command must refuse to dump binary there.
    primary, secondary = pty.openpty()
    script = (
        "import sys\n"
        "from tlsgate.commands.ca import ca\n"
        "from tlsgate.errors import TlsgateError\n"
        "try:\n"
        "    ca.main(sys.argv[1:], standalone_mode=False)\n"
        "except TlsgateError as e:\n"
        "    print(type(e).__name__, e.one_line(), file=sys.stderr)\n"
        "    sys.exit(e.exit_code)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, "export", "--format", "der", "--home", str(home.root)],
            stdout=secondary,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == UsageError.exit_code
    assert b"UsageError refusing to write binary DER to a terminal (use --out FILE" in proc.stderr


def test_cli_import(
    home: Home, authority: CertificateAuthority, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, sub = enterprise
    cert_file = write(tmp_path / "chain.pem", sub.pem + root.pem)
    key_file = write(tmp_path / "sub.key", sub.key_pem)
    code, out, _, exc = run_cli(
        "import", "--cert", str(cert_file), "--key", str(key_file), "--home", str(home.root)
    )
    assert (code, exc) == (0, None)
    assert "Example Corp tlsgate sub-CA" in out
    assert "2 certificate(s)" in out
    assert "ca.pem.bak" in out
    assert load_or_create_ca(home).cert == sub.cert


def test_cli_import_error_is_from_the_error_tree(
    home: Home, enterprise: tuple[Issued, Issued], tmp_path: Path
) -> None:
    root, sub = enterprise
    code, _, _, exc = run_cli(
        "import",
        "--cert",
        str(write(tmp_path / "c.pem", sub.pem)),
        "--key",
        str(write(tmp_path / "k.pem", root.key_pem)),
        "--home",
        str(home.root),
    )
    assert code != 0
    assert isinstance(exc, CertificateAuthorityError)


def test_cli_import_requires_both_files(home: Home) -> None:
    code, _, err, _ = run_cli("import", "--home", str(home.root))
    assert code == 2
    assert "--cert" in err
