"""Pure parsers for TLS handshake messages seen through the message hook.

OpenSSL reports handshake messages to ``SSLContext._msg_callback`` decrypted, in TLS
1.2 and 1.3 alike, with their 4-byte header.  ``tlsgate probe`` uses these to show the
certificate chain exactly as the server sent it and the CA names a server accepts for
client certificates.
"""

from __future__ import annotations

from cryptography import x509

CERTIFICATE = 11
CERTIFICATE_REQUEST = 13
EXT_CERTIFICATE_AUTHORITIES = 47

_SHORT = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated TLS handshake message")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vec(self, len_bytes: int) -> bytes:
        return self.take(self.uint(len_bytes))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    # DER: tag, definite length, value
    def tlv(self) -> tuple[int, bytes]:
        tag = self.uint(1)
        first = self.uint(1)
        length = first if first < 0x80 else self.uint(first & 0x7F)
        return tag, self.take(length)


def _body(message: bytes, expected_type: int) -> _Buf:
    buf = _Buf(message)
    if buf.uint(1) != expected_type:
        raise ValueError("unexpected handshake message type")
    return _Buf(buf.take(buf.uint(3)))


def parse_certificate_message(message: bytes, *, tls13: bool) -> list[x509.Certificate]:
    """The certificates of a Certificate message (RFC 5246 §7.4.2, RFC 8446 §4.4.2)."""
    buf = _body(message, CERTIFICATE)
    if tls13:
        buf.vec(1)  # certificate_request_context
    certs = _Buf(buf.vec(3))
    out = []
    while certs.left:
        der = certs.vec(3)
        if tls13:
            certs.vec(2)  # per-certificate extensions
        out.append(x509.load_der_x509_certificate(der))
    return out


def _oid(raw: bytes) -> str:
    first = raw[0]
    parts = [first // 40 if first < 80 else 2, first % 40 if first < 80 else first - 80]
    value = 0
    for b in raw[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def distinguished_name(der: bytes) -> str:
    """A DER DistinguishedName as RFC 4514 text (most specific attribute first)."""
    tag, seq = _Buf(der).tlv()
    if tag != 0x30:
        raise ValueError("not a DistinguishedName")
    rdns = _Buf(seq)
    parts = []
    while rdns.left:
        _, rdn = rdns.tlv()
        attrs = _Buf(rdn)
        names = []
        while attrs.left:
            _, atv = attrs.tlv()
            inner = _Buf(atv)
            _, oid = inner.tlv()
            vtag, value = inner.tlv()
            text = value.decode("utf-16-be" if vtag == 0x1E else "utf-8", "replace")
            names.append(f"{_SHORT.get(_oid(oid), _oid(oid))}={text}")
        parts.append("+".join(names))
    return ",".join(reversed(parts))


def _name_list(raw: bytes) -> list[str]:
    buf = _Buf(raw)
    out = []
    while buf.left:
        der = buf.vec(2)
        try:
            out.append(distinguished_name(der))
        except ValueError:
            out.append(f"<unparsable {len(der)}-byte name>")
    return out


def certificate_request_authorities(message: bytes, *, tls13: bool) -> list[str]:
    """CA names a server accepts for client certificates (may be empty: servers may omit them)."""
    buf = _body(message, CERTIFICATE_REQUEST)
    if not tls13:
        buf.vec(1)  # certificate_types
        buf.vec(2)  # supported_signature_algorithms
        return _name_list(buf.vec(2)) if buf.left else []
    buf.vec(1)  # certificate_request_context
    exts = _Buf(buf.vec(2))
    while exts.left:
        ext_type = exts.uint(2)
        data = exts.vec(2)
        if ext_type == EXT_CERTIFICATE_AUTHORITIES:
            return _name_list(_Buf(data).vec(2))
    return []
