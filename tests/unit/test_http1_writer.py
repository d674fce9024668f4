"""The heads the proxy writes (sans-IO): status lines, Via, framing; and the bounded
caches that keep formatting off the per-request path."""

from __future__ import annotations

from tlsgate.http1 import writer
from tlsgate.http1.events import Framing, ResponseHead
from tlsgate.http1.headers import Fields, Headers, append_via


def _response(
    status: int, reason: bytes, items: Headers, version: tuple[int, int] = (1, 1)
) -> ResponseHead:
    return ResponseHead(status, reason, version, items, Fields(items), True, Framing.LENGTH, 3)


def test_client_response_head_rewrites_framing_and_adds_via() -> None:
    rev = _response(200, b"OK", [(b"Server", b"nginx"), (b"Connection", b"keep-alive")])
    head = writer.client_response_head(
        rev, framing=Framing.LENGTH, keep_alive=True, client_version=(1, 1)
    )
    assert head == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nVia: 1.1 tlsgate\r\nContent-Length: 3\r\n\r\n"
    )


def test_status_line_keeps_the_servers_reason_or_names_the_status() -> None:
    for version, status, reason, line in [
        ((1, 1), 200, b"Fine", b"HTTP/1.1 200 Fine\r\n"),
        ((1, 0), 404, b"", b"HTTP/1.0 404 Not Found\r\n"),
        ((1, 1), 599, b"", b"HTTP/1.1 599 Status\r\n"),
    ]:
        rev = _response(status, reason, [])
        head = writer.client_response_head(
            rev, framing=Framing.LENGTH, keep_alive=True, client_version=version
        )
        assert head.startswith(line)
        assert writer.client_response_head(  # the cached line is the same line
            rev, framing=Framing.LENGTH, keep_alive=True, client_version=version
        ).startswith(line)
    assert writer.interim_response(_response(103, b"", [(b"Link", b"</a>")])) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    )


def test_status_line_cache_holds_one_line_per_status_and_follows_the_reason() -> None:
    """Reasons come from servers: one sending a new one each time gets its own reason
    every time, and the cache keeps one line per status code, not one per reason."""
    for i in range(600):
        reason = b"reason %d" % i
        head = writer.client_response_head(
            _response(299, reason, []),
            framing=Framing.LENGTH,
            keep_alive=True,
            client_version=(1, 1),
        )
        assert head.startswith(b"HTTP/1.1 299 " + reason + b"\r\n")
    assert writer._STATUS_LINES[299] == (b"reason 599", b"HTTP/1.1 299 reason 599\r\n")


def test_via_names_the_version_of_the_message() -> None:
    for version, hop in [((1, 1), b"1.1 tlsgate"), ((1, 0), b"1.0 tlsgate")]:
        rev = _response(200, b"OK", [(b"Via", b"1.1 origin")], version)
        head = writer.client_response_head(
            rev, framing=Framing.LENGTH, keep_alive=True, client_version=(1, 1)
        )
        assert b"\r\nVia: 1.1 origin\r\nVia: " + hop + b"\r\n" in head
    items: Headers = []
    append_via(items, (2, 0), b"gate")
    assert items == [(b"Via", b"2.0 gate")]
