"""A sans-IO parser of the TLS ClientHello that opens a CONNECT tunnel.

The proxy feeds it whatever the client sends after ``200 Connection established`` and
gets back the ClientHello's SNI, ALPN and versions, plus the exact bytes it consumed,
so that a tunnel can replay them to the server unchanged.  It copes with a ClientHello
spread over several records and with records split at any byte (RFC 8446 §5.1), and
refuses input that is not TLS (plain HTTP inside the tunnel) or is malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CLIENT_HELLO = 64 * 1024
"""Cap on the bytes buffered for one ClientHello (records plus headers)."""

_RECORD_HEADER = 5
_MAX_RECORD = 1 << 14  # plaintext fragment limit (RFC 8446 §5.1)
_HANDSHAKE = 22
_CLIENT_HELLO = 1

_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43


class NotTLS(ValueError):
    """The first bytes are not a TLS handshake record (e.g. plain HTTP in the tunnel)."""


class MalformedClientHello(ValueError):
    """A TLS handshake record that does not hold a valid ClientHello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    raw: bytes
    """The records that carried the ClientHello, exactly as received: replay these."""
    rest: bytes
    """Bytes the client sent after those records (usually none)."""
    sni: str | None
    """The host_name of the server_name extension, as sent."""
    alpn: tuple[str, ...]
    supported_versions: tuple[int, ...]
    """From the supported_versions extension (0x0304 = TLS 1.3), GREASE values removed."""
    legacy_version: int
    """ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)."""


def _is_grease(value: int) -> bool:
    # RFC 8701: 0x0A0A, 0x1A1A, ... 0xFAFA.
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


class _Cursor:
    """Reads big-endian fields from a handshake body; any overrun is malformed."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedClientHello(f"ClientHello truncated in {what}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, len_bytes: int, what: str) -> _Cursor:
        return _Cursor(self.take(self.uint(len_bytes, what), what))

    def at_end(self) -> bool:
        return self.pos == len(self.data)


class ClientHelloReader:
    """Feed it the client's bytes; it returns the :class:`ClientHello` once complete.

    Incremental: each record is looked at once, so a client dribbling one byte at a
    time costs linear work, not quadratic.
    """

    def __init__(self, max_size: int = MAX_CLIENT_HELLO) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._pos = 0
        """End of the complete records consumed so far."""
        self._handshake = bytearray()
        """Handshake bytes of those records."""
        self._done = False

    def feed(self, data: bytes) -> ClientHello | None:
        """``None`` while more bytes are needed.  Raises :class:`NotTLS` or
        :class:`MalformedClientHello`; after a result, feeding again is an error."""
        if self._done:
            raise RuntimeError("the ClientHello is already complete")
        checked = len(self._buf) >= 2
        self._buf += data
        if not checked and self._buf:
            _check_first_bytes(bytes(self._buf[:2]))
        hello = self._parse()
        if hello is not None:
            self._done = True
            self._buf = bytearray()
            self._handshake = bytearray()
        return hello

    def _parse(self) -> ClientHello | None:
        buf = self._buf
        while True:
            pos = self._pos
            if len(buf) - pos < _RECORD_HEADER:
                self._check_cap(pos + _RECORD_HEADER)
                return None
            ctype, major = buf[pos], buf[pos + 1]
            length = int.from_bytes(buf[pos + 3 : pos + 5], "big")
            if ctype != _HANDSHAKE or major != 3:
                raise MalformedClientHello(
                    f"record {ctype} (version {major}.{buf[pos + 2]}) inside the ClientHello"
                )
            if length == 0 or length > _MAX_RECORD:
                raise MalformedClientHello(f"invalid handshake record length {length}")
            end = pos + _RECORD_HEADER + length
            if len(buf) < end:
                self._check_cap(end)
                return None
            self._handshake += buf[pos + _RECORD_HEADER : end]
            self._pos = end
            handshake = self._handshake
            if handshake[0] != _CLIENT_HELLO:
                raise MalformedClientHello(
                    f"the first handshake message is type {handshake[0]}, not ClientHello"
                )
            if len(handshake) < 4:
                continue
            body_len = int.from_bytes(handshake[1:4], "big")
            if body_len + 4 + _RECORD_HEADER > self._max:
                raise MalformedClientHello(f"ClientHello of {body_len} bytes is too large")
            if len(handshake) >= 4 + body_len:
                sni, alpn, versions, legacy = _parse_body(bytes(handshake[4 : 4 + body_len]))
                return ClientHello(
                    raw=bytes(buf[:end]),
                    rest=bytes(buf[end:]),
                    sni=sni,
                    alpn=alpn,
                    supported_versions=versions,
                    legacy_version=legacy,
                )

    def _check_cap(self, needed: int) -> None:
        if needed > self._max:
            raise MalformedClientHello(f"ClientHello larger than {self._max} bytes")


def _check_first_bytes(head: bytes) -> None:
    """Fail fast on the first one or two bytes: a handshake record of TLS (3.x)."""
    if head[0] != _HANDSHAKE:
        raise NotTLS(f"the client did not start TLS (first byte 0x{head[0]:02x})")
    if len(head) >= 2 and head[1] != 3:
        raise NotTLS(f"the client did not start TLS (record version {head[1]}.x)")


def _parse_body(body: bytes) -> tuple[str | None, tuple[str, ...], tuple[int, ...], int]:
    c = _Cursor(body)
    legacy_version = c.uint(2, "legacy_version")
    c.take(32, "random")
    session_id = c.vector(1, "legacy_session_id")
    if len(session_id.data) > 32:
        raise MalformedClientHello("legacy_session_id longer than 32 bytes")
    suites = c.vector(2, "cipher_suites")
    if not suites.data or len(suites.data) % 2:
        raise MalformedClientHello("invalid cipher_suites length")
    if not c.vector(1, "legacy_compression_methods").data:
        raise MalformedClientHello("empty legacy_compression_methods")
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    if not c.at_end():  # extensions are optional before TLS 1.3
        exts = c.vector(2, "extensions")
        if not c.at_end():
            raise MalformedClientHello("bytes after the extensions")
        seen: set[int] = set()
        while not exts.at_end():
            ext_type = exts.uint(2, "extension type")
            ext = exts.vector(2, f"extension {ext_type}")
            if ext_type in seen:
                raise MalformedClientHello(f"extension {ext_type} appears twice")
            seen.add(ext_type)
            if ext_type == _EXT_SERVER_NAME:
                sni = _server_name(ext)
            elif ext_type == _EXT_ALPN:
                alpn = _alpn(ext)
            elif ext_type == _EXT_SUPPORTED_VERSIONS:
                versions = _supported_versions(ext)
    return sni, alpn, versions, legacy_version


def _server_name(ext: _Cursor) -> str | None:
    names = ext.vector(2, "server_name_list")
    if not ext.at_end():
        raise MalformedClientHello("bytes after server_name_list")
    host: str | None = None
    while not names.at_end():
        name_type = names.uint(1, "server name type")
        value = names.vector(2, "server name").data
        if name_type == 0 and host is None:
            if not value:
                raise MalformedClientHello("empty server name")
            try:
                host = value.decode("ascii")
            except UnicodeDecodeError:
                raise MalformedClientHello("server name is not ASCII") from None
    return host


def _alpn(ext: _Cursor) -> tuple[str, ...]:
    protocols = ext.vector(2, "protocol_name_list")
    if not ext.at_end():
        raise MalformedClientHello("bytes after protocol_name_list")
    out: list[str] = []
    while not protocols.at_end():
        name = protocols.vector(1, "protocol name").data
        if not name:
            raise MalformedClientHello("empty ALPN protocol name")
        out.append(name.decode("latin-1"))  # opaque bytes; latin-1 never fails
    return tuple(out)


def _supported_versions(ext: _Cursor) -> tuple[int, ...]:
    versions = ext.vector(1, "supported_versions")
    if not ext.at_end() or not versions.data or len(versions.data) % 2:
        raise MalformedClientHello("invalid supported_versions extension")
    out: list[int] = []
    while not versions.at_end():
        v = versions.uint(2, "version")
        if not _is_grease(v):
            out.append(v)
    return tuple(out)
