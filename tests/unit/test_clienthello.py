"""The ClientHello parser: real hellos (Python's ssl, curl, openssl), fed in random pieces
and re-fragmented into several records, give the same answer; non-TLS and malformed
input is refused with the right error."""

from __future__ import annotations

import base64
import itertools
import ssl
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlsgate.tls.clienthello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    ClientHelloReader,
    MalformedClientHello,
    NotTLS,
)

TLS13, TLS12 = 0x0304, 0x0303

# Captured once on this project's test machine from a local listener (127.0.0.1):
# curl 7.88.1 (OpenSSL 3.0) to https://curl.example:PORT/ and
# `openssl s_client -servername openssl.example -alpn h2,http/1.1`.
CURL_HELLO = base64.b64decode(
    "FgMBAgABAAH8AwMZDXyPIFOyJHhdQOx5ePcJIlGr248+9i1gFgz38zk5hyAlwuO3edlTNIxAHj0pZ4FKPNegTHeU"
    "baycj5mBEUg2DwA+EwITAxMBwCzAMACfzKnMqMyqwCvALwCewCTAKABrwCPAJwBnwArAFAA5wAnAEwAzAJ0AnAA9"
    "ADwANQAvAP8BAAF1AAAAEQAPAAAMY3VybC5leGFtcGxlAAsABAMAAQIACgAWABQAHQAXAB4AGQAYAQABAQECAQMB"
    "BAAQAA4ADAJoMghodHRwLzEuMQAWAAAAFwAAADEAAAANACoAKAQDBQMGAwgHCAgICQgKCAsIBAgFCAYEAQUBBgED"
    "AwMBAwIEAgUCBgIAKwAJCAMEAwMDAgMBAC0AAgEBADMAJgAkAB0AIIJYS7qUPGEtOsxR1nvo4d1SBj1gMldFvpFo"
    "v1YP3FwiABUAsQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
)
OPENSSL_HELLO = base64.b64decode(
    "FgMBAU4BAAFKAwPTXiNTxUSQDobZrKRIOQKmcWd/ftDovA2uqhmRHMvQqiDtpUBOuD7COaJm9fH91nYF2Wmydt/p"
    "PGNAkrz8lyB58AA+EwITAxMBwCzAMACfzKnMqMyqwCvALwCewCTAKABrwCPAJwBnwArAFAA5wAnAEwAzAJ0AnAA9"
    "ADwANQAvAP8BAADDAAAAFAASAAAPb3BlbnNzbC5leGFtcGxlAAsABAMAAQIACgAWABQAHQAXAB4AGQAYAQABAQEC"
    "AQMBBAAjAAAAEAAOAAwCaDIIaHR0cC8xLjEAFgAAABcAAAANACoAKAQDBQMGAwgHCAgICQgKCAsIBAgFCAYEAQUB"
    "BgEDAwMBAwIEAgUCBgIAKwAJCAMEAwMDAgMBAC0AAgEBADMAJgAkAB0AILRlBXyH7o1MgH5Mw1o8Z0SRLTfmv+Db"
    "CmqbrpD2NjRQ"
)


# -- making ClientHellos ---------------------------------------------------------------


def python_hello(
    server_hostname: str | None,
    alpn: list[str] | None = None,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    """The first flight of a real Python ssl client (an SSLObject over memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def records(payload: bytes, sizes: list[int], content_type: int = 22) -> bytes:
    """``payload`` framed as TLS records with fragments of the given sizes (cycled)."""
    out, pos, i = bytearray(), 0, 0
    while pos < len(payload):
        n = max(1, sizes[i % len(sizes)]) if sizes else len(payload)
        chunk = payload[pos : pos + n]
        out += struct.pack("!BHH", content_type, 0x0301, len(chunk)) + chunk
        pos += len(chunk)
        i += 1
    return bytes(out)


def vec(length_bytes: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!H", ext_type) + vec(2, data)


def sni_ext(name: bytes) -> bytes:
    return ext(0, vec(2, b"\x00" + vec(2, name)))


def alpn_ext(*names: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, n) for n in names)))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec(1, b"".join(struct.pack("!H", v) for v in versions)))


def hello_message(extensions: bytes | None, *, legacy_version: int = TLS12) -> bytes:
    """A ClientHello handshake message (header included) built by hand."""
    body = struct.pack("!H", legacy_version) + bytes(32) + vec(1, bytes(32))
    body += vec(2, b"\x13\x01\x13\x02") + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, extensions)
    return b"\x01" + vec(3, body)


def handshake_of(wire: bytes) -> bytes:
    """The handshake bytes carried by a run of records."""
    out, pos = bytearray(), 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        out += wire[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return bytes(out)


def feed_all(chunks: list[bytes]) -> tuple[ClientHello, bytes]:
    """Feed chunks until the hello is complete: the hello and every byte after it
    (its ``rest`` plus the chunks not fed, which the IO layer would read next)."""
    reader = ClientHelloReader()
    for i, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        if result is not None:
            return result, result.rest + b"".join(chunks[i + 1 :])
    raise AssertionError("the reader wanted more bytes")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# One hello per configuration, made once: generating them is the slow part.
PY_CASES: list[tuple[str | None, list[str] | None, ssl.TLSVersion, tuple[int, ...]]] = [
    ("example.com", ["http/1.1"], ssl.TLSVersion.MAXIMUM_SUPPORTED, (TLS13, TLS12)),
    ("api.example.org", ["h2", "http/1.1"], ssl.TLSVersion.MAXIMUM_SUPPORTED, (TLS13, TLS12)),
    (None, None, ssl.TLSVersion.MAXIMUM_SUPPORTED, (TLS13, TLS12)),
    ("127.0.0.1", ["http/1.1"], ssl.TLSVersion.MAXIMUM_SUPPORTED, (TLS13, TLS12)),
    ("tls12.example", None, ssl.TLSVersion.TLSv1_2, ()),
    ("a" * 63 + "." + "b" * 63 + ".example", ["x-custom"], ssl.TLSVersion.TLSv1_3, (TLS13, TLS12)),
]


@pytest.fixture(scope="module")
def py_hellos() -> list[tuple[bytes, ClientHello]]:
    out = []
    for host, alpn, max_version, versions in PY_CASES:
        wire = python_hello(host, alpn, max_version)
        # Python sends no SNI for an IP literal (RFC 6066 forbids it).
        sni = None if host is None or host[0].isdigit() else host
        expected = ClientHello(
            raw=wire,
            rest=b"",
            sni=sni,
            alpn=tuple(alpn or ()),
            supported_versions=versions,
            legacy_version=TLS12,
        )
        out.append((wire, expected))
    return out


# -- whole hellos --------------------------------------------------------------------------


def test_python_hellos_parse_in_one_piece(py_hellos: list[tuple[bytes, ClientHello]]) -> None:
    for wire, expected in py_hellos:
        assert ClientHelloReader().feed(wire) == expected


def test_curl_hello() -> None:
    hello = ClientHelloReader().feed(CURL_HELLO)
    assert hello is not None
    assert hello.sni == "curl.example"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.supported_versions == (TLS13, TLS12, 0x0302, 0x0301)
    assert hello.legacy_version == TLS12
    assert hello.raw == CURL_HELLO
    assert hello.rest == b""


def test_openssl_hello() -> None:
    hello = ClientHelloReader().feed(OPENSSL_HELLO)
    assert hello is not None
    assert (hello.sni, hello.alpn) == ("openssl.example", ("h2", "http/1.1"))
    assert hello.raw == OPENSSL_HELLO


def test_bytes_after_the_hello_are_kept_in_rest() -> None:
    tail = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05early"
    hello = ClientHelloReader().feed(CURL_HELLO + tail)
    assert hello is not None
    assert hello.raw == CURL_HELLO
    assert hello.rest == tail


def test_hello_without_extensions() -> None:
    wire = records(hello_message(None), [])
    hello = ClientHelloReader().feed(wire)
    assert hello == ClientHello(wire, b"", None, (), (), TLS12)


def test_grease_versions_are_dropped_and_others_kept() -> None:
    extensions = (
        ext(0x0A0A, b"")
        + sni_ext(b"grease.example")
        + versions_ext(0x3A3A, TLS13, TLS12)
        + alpn_ext(b"http/1.1")
    )
    hello = ClientHelloReader().feed(records(hello_message(extensions), []))
    assert hello is not None
    assert hello.supported_versions == (TLS13, TLS12)
    assert hello.sni == "grease.example"
    assert hello.alpn == ("http/1.1",)


def test_large_hello_over_several_records() -> None:
    # A post-quantum key share or a big padding makes hellos larger than one record.
    padding = ext(21, bytes(20000))
    message = hello_message(sni_ext(b"big.example") + padding)
    wire = records(message, [16384])
    assert wire.count(b"\x16\x03\x01") >= 2
    hello = ClientHelloReader().feed(wire)
    assert hello is not None
    assert hello.sni == "big.example"
    assert hello.raw == wire


def test_feeding_after_the_result_is_an_error() -> None:
    reader = ClientHelloReader()
    assert reader.feed(OPENSSL_HELLO) is not None
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


# -- random splits (Hypothesis) ---------------------------------------------------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.integers(min_value=0, max_value=len(PY_CASES) + 1),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12),
    fragments=st.lists(st.integers(min_value=1, max_value=600), max_size=6),
    tail=st.binary(max_size=40),
)
def test_random_splits_and_fragmentation_give_the_same_result(
    py_hellos: list[tuple[bytes, ClientHello]],
    case: int,
    cuts: list[int],
    fragments: list[int],
    tail: bytes,
) -> None:
    captured = [CURL_HELLO, OPENSSL_HELLO]
    if case < len(py_hellos):
        original, _ = py_hellos[case]
    else:
        original = captured[case - len(py_hellos)]
    reference = ClientHelloReader().feed(original)
    assert reference is not None
    # Re-frame the same handshake bytes into records of other sizes, as a client may.
    wire = records(handshake_of(original), fragments) if fragments else original
    hello, after = feed_all(split_at(wire + tail, cuts))
    assert hello.raw == wire
    assert after == tail
    assert tail.startswith(hello.rest)
    assert (hello.sni, hello.alpn, hello.supported_versions, hello.legacy_version) == (
        reference.sni,
        reference.alpn,
        reference.supported_versions,
        reference.legacy_version,
    )


def test_every_split_point_of_a_small_hello(py_hellos: list[tuple[bytes, ClientHello]]) -> None:
    wire, expected = py_hellos[0]
    for cut in range(len(wire) + 1):
        assert feed_all([wire[:cut], wire[cut:]]) == (expected, b"")


def test_one_byte_at_a_time() -> None:
    reader = ClientHelloReader()
    results = [reader.feed(CURL_HELLO[i : i + 1]) for i in range(len(CURL_HELLO))]
    assert results[:-1] == [None] * (len(CURL_HELLO) - 1)
    assert results[-1] is not None and results[-1].sni == "curl.example"


# -- not TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x80\x2e\x01\x00\x02",  # an SSLv2-style hello
        b"\x17\x03\x03\x00\x10",  # application data first
        b"\x16\x02\x00\x00\x10",  # not version 3.x
    ],
)
def test_not_tls(data: bytes) -> None:
    with pytest.raises(NotTLS):
        ClientHelloReader().feed(data)


def test_not_tls_is_known_from_the_first_byte() -> None:
    reader = ClientHelloReader()
    with pytest.raises(NotTLS):
        reader.feed(b"G")


def test_not_tls_is_a_value_error() -> None:
    assert issubclass(NotTLS, ValueError)
    assert issubclass(MalformedClientHello, ValueError)


# -- malformed ---------------------------------------------------------------------------------


def _msg(extensions: bytes) -> bytes:
    return records(hello_message(extensions), [])


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\x16\x03\x01\x00\x00", "empty record"),
        (b"\x16\x03\x01\x40\x01" + bytes(0x4001), "record over 2^14"),
        (records(b"\x02\x00\x00\x04" + bytes(4), []), "ServerHello, not ClientHello"),
        (
            records(hello_message(sni_ext(b"x.example"))[:20], [])
            + records(b"\x00" * 10, [], content_type=23),
            "another record type inside the hello",
        ),
        (_msg(sni_ext(b"a.example") + sni_ext(b"b.example")), "duplicate extension"),
        (_msg(ext(0, b"\x00\x05\x00\x00\x09abc")), "server name overruns its list"),
        (_msg(ext(0, vec(2, b"\x00" + vec(2, b"")))), "empty server name"),
        (_msg(ext(0, vec(2, b"\x00" + vec(2, "bü".encode())))), "non-ASCII server name"),
        (_msg(ext(16, vec(2, b"\x00"))), "empty ALPN name"),
        (_msg(ext(43, b"\x03\x03\x04\x03")), "odd supported_versions"),
        (_msg(b"\x00\x00\x00\x10short"), "extension longer than the block"),
        (records(b"\x01\x00\x00\x05" + b"\x03\x03abc", []), "body too short for random"),
        (records(b"\x01" + vec(3, hello_message(b"")[4:] + b"\x00"), []), "bytes after extensions"),
    ],
)
def test_malformed(wire: bytes, why: str) -> None:
    with pytest.raises(MalformedClientHello):
        ClientHelloReader().feed(wire)


def test_size_cap_from_the_declared_length() -> None:
    header = b"\x16\x03\x01\x00\x04" + b"\x01" + (MAX_CLIENT_HELLO).to_bytes(3, "big")
    with pytest.raises(MalformedClientHello, match="too large"):
        ClientHelloReader().feed(header)


def test_size_cap_on_buffered_records() -> None:
    reader = ClientHelloReader(max_size=1024)
    message = hello_message(ext(21, bytes(900)))
    wire = records(message, [100])
    with pytest.raises(MalformedClientHello):
        for i in range(0, len(wire), 64):
            reader.feed(wire[i : i + 64])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_garbage_after_a_record_header_fails_cleanly(garbage: bytes) -> None:
    data = b"\x16\x03\x01" + len(garbage).to_bytes(2, "big") + garbage
    try:
        result = ClientHelloReader().feed(data)
    except (NotTLS, MalformedClientHello):
        return
    assert result is None or isinstance(result, ClientHello)


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(min_value=5, max_value=len(OPENSSL_HELLO) - 1), value=st.integers(0, 255)
)
def test_corrupted_real_hello_fails_cleanly(position: int, value: int) -> None:
    data = bytearray(OPENSSL_HELLO)
    data[position] = value
    try:
        result = ClientHelloReader().feed(bytes(data))
    except MalformedClientHello:
        return
    # Still valid (a changed random byte) or waiting for more (a longer length field).
    assert result is None or result.raw == bytes(data)
