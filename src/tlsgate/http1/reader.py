"""Sans-IO HTTP/1.1 readers: feed bytes, get events.

httptools (llhttp) finds message boundaries.  What it accepts but a proxy must not
(measured in ``research/hardening.md``) is checked here: HTTP versions, Host rules,
CONNECT authorities, empty or HTTP/1.0 Transfer-Encoding, underscore look-alikes of
framing fields, size limits, and response bodies after HEAD.
"""

from __future__ import annotations

from typing import Final

import httptools

from tlsgate.config.model import Limits
from tlsgate.errors import ProtocolError
from tlsgate.http1.events import (
    END,
    BodyData,
    Framing,
    ParseFailed,
    RequestEvent,
    RequestHead,
    ResponseEvent,
    ResponseHead,
    TunnelData,
)
from tlsgate.http1.headers import Fields, Headers, tokens
from tlsgate.http1.target import Authority, Target, parse_absolute, parse_authority

_VERSIONS: Final = {"1.1": (1, 1), "1.0": (1, 0)}
_HTTP11: Final = (1, 1)

# Framing's singletons and END as this module's own Final names: mypyc reads these as C
# statics, where ``Framing.NONE`` is an attribute lookup on the class (~165 instructions)
# and an imported name a dict lookup; a proxied request reads them ~25 times.
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_CLOSE: Final = Framing.CLOSE
_END: Final = END
_DANGEROUS_UNDERSCORE = frozenset({b"transfer_encoding", b"content_length"})


class _Abort(Exception):
    """Raised inside a parser callback; carried out of httptools as ``__context__``."""

    def __init__(self, error: ProtocolError) -> None:
        self.error = error


def _error_from(exc: httptools.HttpParserError, fallback_status: int) -> ProtocolError:
    ctx = exc.__context__
    if isinstance(ctx, _Abort):
        return ctx.error
    detail = str(exc) or type(exc).__name__
    return ProtocolError(fallback_status, f"malformed HTTP: {detail}")


_DONE_PARSER: Final = httptools.HttpResponseParser(object())
"""Stands in for a finished response reader's parser (never fed)."""


class _Reader:
    """Shared callback bookkeeping of the request and response readers."""

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    def __init__(self, limits: Limits) -> None:
        # The limits read per message, as native ints: an attribute of the pydantic
        # model costs ~300 instructions (its __getattr__ hook), ~10 per request.
        self._max_header_bytes: int = limits.max_header_bytes
        self._max_header_count: int = limits.max_header_count
        self._max_chunk_line_bytes: int = limits.max_chunk_line_bytes
        self._max_request_body_bytes: int = limits.max_request_body_bytes
        self._too_large_status = 431
        self._clear()

    def _clear(self) -> None:
        """The bookkeeping of a reader that has read nothing yet."""
        self._events: list[RequestEvent | ResponseEvent] = []
        self._headers: Headers = []
        self._head_size = 0
        self._in_head = True
        self._head_fed = 0
        self._body_in_feed = 0
        self._chunked = False
        self._chunk_headers = 0
        self._chunk_overhead = 0
        self._feed_start = b""
        self._first_line = b""

    # httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        # A message that begins before any other event of a feed begins at the start
        # of the bytes fed: its first line is there to read the version from.
        self._first_line, self._feed_start = self._feed_start, b""
        self._headers = []
        self._head_size = 0
        self._in_head = True
        self._head_fed = 0
        self._chunk_headers = 0
        self._chunk_overhead = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # Hot: ~10 calls per message.  Head limits are checked once, when the head is
        # complete (memory meanwhile is bounded by _before_feed's per-feed cap).
        self._headers.append((name, value))
        if not self._in_head and len(self._headers) > self._max_header_count:
            raise _Abort(ProtocolError(400, "too many trailer fields"))

    def _check_head(self) -> None:
        """Size and count limits of the head just completed (raises _Abort)."""
        headers = self._headers
        size = self._head_size + 4 * len(headers)
        for name, value in headers:
            size += len(name) + len(value)
        if size > self._max_header_bytes or len(headers) > self._max_header_count:
            raise _Abort(
                ProtocolError(
                    self._too_large_status,
                    f"header larger than {self._max_header_bytes} bytes "
                    f"or {self._max_header_count} fields",
                )
            )

    def on_body(self, body: bytes) -> None:
        self._body_in_feed += len(body)
        self._events.append(BodyData(body))

    def on_chunk_header(self) -> None:
        self._chunk_headers += 1

    def on_message_complete(self) -> None:
        self._events.append(_END)
        self._in_head = True
        self._chunked = False
        self._feed_start = b""  # a message beginning later in this feed starts inside it

    # accounting around feed_data --------------------------------------------------
    def _before_feed(self, data: bytes) -> None:
        self._body_in_feed = 0
        if self._in_head:
            if self._head_fed > self._max_header_bytes:
                raise _Abort(
                    ProtocolError(
                        self._too_large_status,
                        f"header larger than {self._max_header_bytes} bytes",
                    )
                )
            self._head_fed += len(data)

    def _after_feed(self, data: bytes, started_in_chunked_body: bool) -> None:
        # llhttp has no chunk-extension limit: bound the average non-body bytes per chunk.
        if started_in_chunked_body and self._chunked:
            self._chunk_overhead += len(data) - self._body_in_feed
            allowed = (self._chunk_headers + 1) * self._max_chunk_line_bytes
            if self._chunk_overhead > allowed:
                raise _Abort(ProtocolError(400, "chunk line or chunk extension too long"))

    def _feed_parser(self, data: bytes) -> None:
        started_in_chunked_body = self._chunked and not self._in_head
        self._before_feed(data)
        self._feed_start = data
        self._parser.feed_data(data)
        self._feed_start = b""
        self._after_feed(data, started_in_chunked_body)

    def _version(self, line_is_http11: bool) -> tuple[int, int] | None:
        """The message's HTTP version: 1.1 when its first line says so (the common case,
        read from the bytes); else llhttp's, whose ``get_http_version`` formats a string
        (~2 us a message under load, measured with benchmarks.profile).  None when
        neither 1.1 nor 1.0."""
        self._first_line = b""
        if line_is_http11:
            return _HTTP11
        return _VERSIONS.get(self._parser.get_http_version())

    def _feed(self, data: bytes) -> None:
        """What :meth:`_guarded` feeds ``data`` to (a method, not a bound method passed
        in: making one per feed cost ~350 instructions)."""
        self._feed_parser(data)

    def _guarded(self, data: bytes, parse_status: int) -> bool:
        """``self._feed(data)``; False when the message stream ended there: an upgrade
        (the rest is tunnel data), a parse error (``parse_status``) or a limit, with the
        event that says so appended."""
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._events.append(TunnelData(data[offset:]))
        except httptools.HttpParserError as exc:
            self._events.append(ParseFailed(_error_from(exc, parse_status)))
        except _Abort as exc:
            self._events.append(ParseFailed(exc.error))
        else:
            return True
        return False

    def _take(self) -> list[RequestEvent | ResponseEvent]:
        events, self._events = self._events, []
        return events


class RequestReader(_Reader):
    """Reads requests from a client connection.

    ``origin_authority`` is set inside an inspected tunnel, where requests carry
    origin-form targets for the CONNECT destination.
    """

    _parser: httptools.HttpRequestParser

    def __init__(self, limits: Limits, *, in_tunnel: bool = False) -> None:
        super().__init__(limits)
        self._in_tunnel = in_tunnel
        self._parser = httptools.HttpRequestParser(self)
        self._url = bytearray()
        self._body_total = 0
        self._failed = False
        self._valid_host = b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url = bytearray()
        self._body_total = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if len(self._url) > self._max_header_bytes:
            raise _Abort(ProtocolError(414, "request target too long"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._check_head()
        try:
            head = self._validate_head()
        except ProtocolError as exc:
            raise _Abort(exc) from None
        self._headers = []  # trailers, if any, must not join the head's fields
        self._chunked = head.framing is _CHUNKED
        self._events.append(head)

    def _validate_head(self) -> RequestHead:
        p = self._parser
        line = self._first_line
        eol = line.find(b"\n")
        # The first LF ends the request line; ending in " HTTP/1.1" it is llhttp's too.
        version = self._version(eol >= 10 and line[eol - 10 : eol] == b" HTTP/1.1\r")
        if version is None:
            if p.get_http_version() == "0.9":
                raise ProtocolError(400, "HTTP/0.9 requests are not supported")
            raise ProtocolError(505, f"HTTP/{p.get_http_version()} is not supported; use HTTP/1.1")
        method: bytes = p.get_method()
        headers = self._headers
        fields = Fields(headers)
        if not _DANGEROUS_UNDERSCORE.isdisjoint(fields.lower):
            shown = min(_DANGEROUS_UNDERSCORE.intersection(fields.lower)).decode("latin-1")
            raise ProtocolError(400, f"header {shown!r} looks like a framing field")
        framing, length = _NONE, 0
        if fields.get(b"transfer-encoding") is not None:
            te = fields.get_all(b"transfer-encoding")
            if version == (1, 0):
                raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
            codings = tokens(te)
            if not codings or codings != [b"chunked"]:
                raise ProtocolError(501, "only Transfer-Encoding: chunked is supported")
            framing = _CHUNKED
        elif (content_length := fields.get(b"content-length")) is not None:
            length = int(content_length.strip())
            framing = _LENGTH if length else _NONE
        max_body = self._max_request_body_bytes
        if max_body and length > max_body:
            raise ProtocolError(12239, f"request body of {length} bytes exceeds {max_body} bytes")

        hosts = fields.get_all(b"host")
        raw_target = bytes(self._url)
        connect: Authority | None = None
        target: Target | None = None
        if method == b"CONNECT":
            if framing is not _NONE:
                raise ProtocolError(400, "a CONNECT request must not have a body")
            connect = parse_authority(raw_target)
        elif raw_target.startswith(b"/") or raw_target == b"*":
            if not self._in_tunnel:
                raise ProtocolError(
                    400,
                    "this is a forward proxy: send absolute URLs (configure the client to use "
                    "tlsgate as its HTTP proxy)",
                )
        else:
            target = parse_absolute(raw_target)
        if version == (1, 1) and len(hosts) != 1:
            raise ProtocolError(400, "an HTTP/1.1 request needs exactly one Host header")
        if len(hosts) > 1:
            raise ProtocolError(400, "more than one Host header")
        if hosts and target is None and connect is None and hosts[0] != self._valid_host:
            # Inside a tunnel the Host header names the site; it must at least be valid.
            # A keep-alive client repeats it on every request: validate it once.
            parse_authority(hosts[0].strip(), default_port=443)
            self._valid_host = hosts[0]
        upgrade = None
        if fields.get(b"connection") is not None and b"upgrade" in tokens(
            fields.get_all(b"connection")
        ):
            offered = tokens(fields.get_all(b"upgrade"))
            upgrade = offered[0] if offered else None
        expect_continue = fields.get(b"expect") is not None and b"100-continue" in tokens(
            fields.get_all(b"expect")
        )
        return RequestHead(
            method=method,
            raw_target=raw_target,
            version=version,
            headers=headers,
            fields=fields,
            keep_alive=bool(p.should_keep_alive()),
            framing=framing,
            length=length,
            expect_continue=expect_continue,
            connect=connect,
            target=target,
            upgrade=upgrade,
        )

    def on_body(self, body: bytes) -> None:
        max_body = self._max_request_body_bytes
        super().on_body(body)
        self._body_total += len(body)
        if max_body and self._body_total > max_body:
            raise _Abort(ProtocolError(12239, f"request body exceeds {max_body} bytes"))

    def feed(self, data: bytes) -> list[RequestEvent]:
        """Events for ``data``.  After a ParseFailed or TunnelData, feed nothing more."""
        if self._failed:
            return []
        if not self._guarded(data, 400):
            self._failed = True  # the parser is done; the rest is tunnel or a new reader's
        return self._take()  # type: ignore[return-value]


class ResponseReader(_Reader):
    """Reads one response (with any 1xx before it) from an upstream connection.

    httptools cannot be told that a response to HEAD has no body (httptools #47), so
    for HEAD the head is cut out by hand and only it is given to the parser.

    A ``Content-Length`` body is counted here once its head is parsed: later reads pass
    through as they are, without the parser's callback and copy per read (10 MiB
    downloads: ~640 of each).  Nothing after the response is parsed: bytes a server
    sends after it set :attr:`extra` (the connection is then not reused), so they can
    never become a second response to the client.

    A reader whose parser ended exactly at the end of a final response it parsed whole
    (:attr:`reusable`) reads the next response on the same connection after
    :meth:`reset`: llhttp is then where a new parser would be, and making one (with its
    bound callbacks) cost ~5,000 instructions per proxied request.
    """

    _parser: httptools.HttpResponseParser

    def __init__(self, limits: Limits, request_method: bytes) -> None:
        super().__init__(limits)
        self._too_large_status = 12216
        self._parser = httptools.HttpResponseParser(self)
        self._start(request_method)

    def _start(self, request_method: bytes) -> None:
        """The state of a reader before the first byte of a response."""
        self._head_only = request_method == b"HEAD"
        self._reason = b""
        self._framing = _NONE
        self._done = False
        self._status = 0
        self._pending = b""
        self._body_left = 0
        """Bytes of a Content-Length body still to come (0: not counting)."""
        self._end_at = -1
        """Where the final response's end is in this feed's events (-1: not yet)."""
        self.extra = False
        """The server sent bytes after the response: the connection must not be reused."""
        self._parsed_end = False
        """llhttp itself completed the final response (not the counting, not EOF)."""
        self._keep_alive = False

    @property
    def reusable(self) -> bool:
        """Whether :meth:`reset` may make this reader read the next response: the
        parser completed a final keep-alive response whole, and nothing came after."""
        return (
            self._parsed_end
            and self._keep_alive
            and not self.extra
            and not self._head_only
            and self._parser is not _DONE_PARSER
        )

    def reset(self, request_method: bytes) -> None:
        """Read the next response on the same connection (only if :attr:`reusable`)."""
        if not self.reusable:
            raise RuntimeError("ResponseReader.reset: the parser is not at a message start")
        self._clear()
        self._start(request_method)

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_message_begin(self) -> None:
        if self._done:  # a second message after the final response: stop parsing
            self.extra = True
            raise _Abort(ProtocolError(502, "bytes after the response"))
        super().on_message_begin()
        self._reason = b""

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._body_left:
            self._body_left -= len(body)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._check_head()
        p = self._parser
        status: int = p.get_status_code()
        self._status = status
        version = self._version(self._first_line.startswith(b"HTTP/1.1 ")) or _HTTP11
        headers = self._headers
        fields = Fields(headers)
        te_value = fields.get(b"transfer-encoding")
        te = [] if te_value is None else tokens(fields.get_all(b"transfer-encoding"))
        content_length = fields.get(b"content-length")
        framing, length = _CLOSE, 0
        if self._head_only or status < 200 or status in (204, 304):
            framing = _NONE
        elif te:
            framing = _CHUNKED if te[-1] == b"chunked" else _CLOSE
        elif content_length is not None:
            length = int(content_length.strip())
            framing = _LENGTH if length else _NONE
        self._framing = framing
        self._body_left = length if framing is _LENGTH else 0
        self._chunked = framing is _CHUNKED
        keep_alive = bool(p.should_keep_alive()) and framing is not _CLOSE
        self._keep_alive = keep_alive
        self._events.append(
            ResponseHead(
                status, self._reason, version, headers, fields, keep_alive, framing, length
            )
        )
        self._headers = []  # trailers, if any, must not join the head's fields

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._status >= 200:
            self._done = True
            self._end_at = len(self._events)
            self._parsed_end = True

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self._done:
            self.extra = self.extra or bool(data)
            return []
        if self._body_left and not self._in_head:
            return self._feed_counted(data)
        if not self._guarded(data, 502):
            self._done = True
        events = self._take()
        if self._end_at >= 0:
            if len(events) > self._end_at:  # what followed the response in this read
                del events[self._end_at :]
                self.extra = True
            self._end_at = -1
        if self._done and not self.reusable:
            self.release()
        return events  # type: ignore[return-value]

    def _feed_counted(self, data: bytes) -> list[ResponseEvent]:
        """The rest of a Content-Length body, counted instead of parsed."""
        left = self._body_left
        if len(data) < left:
            self._body_left = left - len(data)
            return [BodyData(data)] if data else []
        self._body_left = 0
        self._done = True
        self.release()
        if len(data) > left:
            self.extra = True
            data = data[:left]
        return [BodyData(data), _END]

    def release(self) -> None:
        """Break the reader <-> parser cycle (the parser holds bound methods of the
        reader), so a finished reader is freed at once instead of by the cyclic GC:
        it was ~11 objects of cyclic garbage per proxied request."""
        self._parser = _DONE_PARSER

    def _feed(self, data: bytes) -> None:
        if self._head_only:
            self._feed_heads_only(data)
        else:
            self._feed_parser(data)

    def _feed_heads_only(self, data: bytes) -> None:
        buf = self._pending + data
        while not self._done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max_header_bytes:
                    raise _Abort(ProtocolError(12216, "response header too large"))
                self._pending = buf
                return
            head, buf = buf[: end + 4], buf[end + 4 :]
            self._before_feed(head)
            self._parser.feed_data(head)
            if self._status >= 200 and not self._done:
                # llhttp waits for the body Content-Length announces; a HEAD reply has none.
                self._events.append(_END)
                self._done = True
            if not self._done:
                # a 1xx: its message is complete; the next head needs a fresh parser
                self._parser = httptools.HttpResponseParser(self)
        self._pending = b""
        self.extra = self.extra or bool(buf)

    def feed_eof(self) -> list[ResponseEvent]:
        """The server closed: ends a close-delimited body, else the response is incomplete."""
        if self._done:
            return []
        self._done = True
        self.release()
        if not self._in_head and self._framing is _CLOSE:
            return [_END]
        return [
            ParseFailed(
                ProtocolError(
                    10053,
                    "the upstream server closed the connection before the response was complete",
                )
            )
        ]
