"""HTTP/1.1 framing and header checks, sans-IO: bytes in, events out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlsgate.config.model import Limits
from tlsgate.http1.events import (
    BodyData,
    Framing,
    MessageEnd,
    ParseFailed,
    RequestHead,
    ResponseHead,
    TunnelData,
)
from tlsgate.http1.headers import FRAMING, HOP_BY_HOP, Fields
from tlsgate.http1.reader import RequestReader, ResponseReader

LIMITS = Limits()


def feed_all(reader, parts):
    events = []
    for part in parts:
        events.extend(reader.feed(part))
    return events


def request_events(raw: bytes, *, in_tunnel: bool = False, limits: Limits = LIMITS):
    return RequestReader(limits, in_tunnel=in_tunnel).feed(raw)


def failure(raw: bytes, **kw) -> int:
    events = request_events(raw, **kw)
    failed = [e for e in events if isinstance(e, ParseFailed)]
    assert failed, f"expected a failure, got {events}"
    return failed[0].error.status


def summarize(events):
    """Comparable view: heads by their key fields, bodies joined between boundaries."""
    out: list = []
    for ev in events:
        if isinstance(ev, BodyData):
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + ev.data)
            else:
                out.append(("body", ev.data))
        elif isinstance(ev, RequestHead):
            out.append(
                ("head", ev.method, ev.raw_target, tuple(ev.headers), ev.framing, ev.version)
            )
        elif isinstance(ev, ResponseHead):
            out.append(("resp", ev.status, tuple(ev.headers), ev.framing, ev.version))
        elif isinstance(ev, MessageEnd):
            out.append(("end",))
        elif isinstance(ev, ParseFailed):
            out.append(("fail", ev.error.status))
        elif isinstance(ev, TunnelData):
            out.append(("tunnel", ev.data))
    return out


# -- well-formed requests ----------------------------------------------------------------


def test_absolute_form_get():
    events = request_events(b"GET http://Example.COM:8080/a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, end = events
    assert isinstance(head, RequestHead) and isinstance(end, MessageEnd)
    assert head.target is not None
    assert head.target.authority.host == "example.com"
    assert head.target.authority.port == 8080
    assert head.target.path == b"/a?b=1"
    assert head.target.host_header() == b"example.com:8080"
    assert head.keep_alive and head.framing is Framing.NONE


def test_content_length_body_and_pipelining():
    raw = (
        b"POST http://a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET http://a/y HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    s = summarize(request_events(raw))
    assert [x[0] for x in s] == ["head", "body", "end", "head", "end"]
    assert s[1] == ("body", b"hello")


def test_chunked_body():
    raw = (
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    s = summarize(request_events(raw))
    assert s[0][4] is Framing.CHUNKED
    assert s[1] == ("body", b"hello world")
    assert s[2] == ("end",)


def test_connect_authority_and_tunnel_bytes():
    events = request_events(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"
    )
    head = events[0]
    assert isinstance(head, RequestHead) and head.connect is not None
    assert (head.connect.host, head.connect.port) == ("example.com", 443)
    assert isinstance(events[-1], TunnelData) and events[-1].data == b"\x16\x03\x01"


def test_connect_ipv6():
    events = request_events(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n")
    assert events[0].connect.host == "::1" and events[0].connect.port == 8443


def test_origin_form_inside_tunnel():
    events = request_events(b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n", in_tunnel=True)
    assert isinstance(events[0], RequestHead) and events[0].target is None


def test_expect_continue_and_upgrade_flags():
    head = request_events(
        b"PUT http://a/ HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    )[0]
    assert head.expect_continue
    ws = request_events(
        b"GET http://a/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert ws[0].upgrade == b"websocket"


def test_data_after_connection_close_serves_first_request():
    events = request_events(
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET http://a/ HTTP/1.1\r\n"
    )
    assert isinstance(events[0], RequestHead) and not events[0].keep_alive
    assert isinstance(events[1], MessageEnd)
    assert isinstance(events[2], ParseFailed)


# -- what httptools accepts but tlsgate must refuse (research/hardening.md) -------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),  # two Hosts
        (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # origin-form to a forward proxy
        (b"GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # userinfo
        (b"GET http://a/#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # no port
        (b"CONNECT a:99999 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 400),
        (b"POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\nContent-Length: 1\r\n\r\nx",
            400,
        ),
        (b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n", 400),
        (
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (b"GET http://a/ HTTP/1.1\nHost: a\n\n", 400),  # bare LF
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ],
)
def test_rejected_requests(raw, status):
    assert failure(raw) == status


def test_empty_list_element_in_te_is_normalised_not_forwarded():
    # RFC 9110 §5.6.1 lets empty elements be ignored; the forwarded field is regenerated.
    from tlsgate.http1.writer import upstream_request_head

    head = request_events(
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n"
    )[0]
    assert head.framing is Framing.CHUNKED
    out = upstream_request_head(head, path=b"/", host=b"a", framing=head.framing)
    assert b",chunked" not in out and b"Transfer-Encoding: chunked\r\n" in out


def test_header_size_limit_is_431():
    limits = Limits(max_header_bytes=2048)
    raw = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 4000 + b"\r\n\r\n"
    assert failure(raw, limits=limits) == 431


def test_header_count_limit_is_431():
    limits = Limits(max_header_count=10)
    raw = (
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(20))
        + b"\r\n"
    )
    assert failure(raw, limits=limits) == 431


def test_unterminated_huge_head_fed_in_pieces_is_refused():
    reader = RequestReader(Limits(max_header_bytes=4096))
    events = reader.feed(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX: ")
    for _ in range(10):
        events += reader.feed(b"a" * 1024)
    assert any(isinstance(e, ParseFailed) and e.error.status == 431 for e in events)


def test_long_chunk_extension_is_refused():
    reader = RequestReader(Limits(max_chunk_line_bytes=256))
    events = reader.feed(
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    events += reader.feed(b"5;" + b"x=y;" * 1000 + b"\r\nhello\r\n")
    assert any(isinstance(e, ParseFailed) and e.error.status == 400 for e in events)


def test_request_body_limit():
    reader = RequestReader(Limits(max_request_body_bytes=10))
    assert (
        failure(
            b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
            limits=Limits(max_request_body_bytes=10),
        )
        == 12239
    )
    events = reader.feed(
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    events += reader.feed(b"b\r\nhello world\r\n0\r\n\r\n")
    assert any(isinstance(e, ParseFailed) and e.error.status == 12239 for e in events)


# -- responses -------------------------------------------------------------------------------


def response_events(raw: bytes, method: bytes = b"GET"):
    rr = ResponseReader(LIMITS, method)
    return rr, rr.feed(raw)


def test_response_to_head_has_no_body_even_with_content_length():
    rr, events = response_events(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n", b"HEAD"
    )
    assert [type(e) for e in events] == [ResponseHead, MessageEnd]
    assert events[0].framing is Framing.NONE
    assert rr.done and rr.extra


def test_bytes_after_a_response_never_become_a_second_response():
    """A hostile or broken server answers twice: the second answer is not parsed, not
    passed on, and the connection is marked so it is not reused."""
    for raw in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxy",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 404 X\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcGARBAGE",
    ):
        rr, events = response_events(raw)
        assert sum(isinstance(e, ResponseHead) for e in events) == 1, raw
        assert isinstance(events[-1], MessageEnd) and rr.done and rr.extra, raw
        assert not any(isinstance(e, ParseFailed) for e in events), raw


def test_a_counted_body_passes_reads_through_and_stops_at_its_length():
    rr = ResponseReader(LIMITS, b"GET")
    events = rr.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
    chunk = b"cdefgh"
    later = rr.feed(chunk)
    assert later == [BodyData(chunk)] and later[0].data is chunk  # no copy
    events += later + rr.feed(b"ijHTTP/1.1 200 OK\r\n")
    assert summarize(events)[1:] == [("body", b"abcdefghij"), ("end",)]
    assert rr.done and rr.extra
    exact = ResponseReader(LIMITS, b"GET")
    exact.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    assert exact.feed(b"wxyz") == [BodyData(b"wxyz"), MessageEnd()]
    assert exact.done and not exact.extra and exact.feed(b"") == []


def test_head_response_after_interim():
    rr, events = response_events(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
        b"HEAD",
    )
    statuses = [e.status for e in events if isinstance(e, ResponseHead)]
    assert statuses == [103, 200] and rr.done and not rr.extra


def test_interim_then_final():
    rr, events = response_events(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    s = summarize(events)
    assert [x[0] for x in s] == ["resp", "end", "resp", "body", "end"]
    assert rr.done


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status):
    rr, events = response_events(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert events[0].framing is Framing.NONE and rr.done


def test_close_delimited_response():
    rr, events = response_events(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert events[0].framing is Framing.CLOSE and not events[0].keep_alive
    assert not rr.done
    assert isinstance(rr.feed_eof()[0], MessageEnd)


def test_truncated_response_is_an_error():
    rr, _ = response_events(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    ev = rr.feed_eof()
    assert isinstance(ev[0], ParseFailed) and ev[0].error.status == 10053


def test_bad_response_is_502():
    _, events = response_events(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    assert isinstance(events[-1], ParseFailed) and events[-1].error.status == 502


# -- split invariance: every byte boundary gives the same events ------------------------

REQUESTS = [
    b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\n\r\n",
    b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
    b"PUT http://a/u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
    b"GET http://a/1 HTTP/1.1\r\nHost: a\r\n\r\nGET http://a/2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET http://a/0 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    b"GET http://a/1 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET http://a/1 HTTP/1.0\r\nHost: a\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
]


@st.composite
def splits(draw, data: bytes):
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=8)))
    parts, prev = [], 0
    for c in cuts:
        parts.append(data[prev:c])
        prev = c
    parts.append(data[prev:])
    return parts


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_request_split_invariance(data):
    raw = data.draw(st.sampled_from(REQUESTS))
    parts = data.draw(splits(raw))
    whole = summarize(RequestReader(LIMITS).feed(raw))
    split = summarize(feed_all(RequestReader(LIMITS), parts))
    assert whole == split


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_response_split_invariance(data):
    raw = data.draw(st.sampled_from(RESPONSES))
    method = data.draw(st.sampled_from([b"GET", b"HEAD"]))
    parts = data.draw(splits(raw))
    whole = summarize(ResponseReader(LIMITS, method).feed(raw))
    split = summarize(feed_all(ResponseReader(LIMITS, method), parts))
    assert whole == split


# A pooled connection's responses, one after another: the reader of one goes on to the
# next when its parser ended cleanly (ResponseReader.reusable).
NEXT_RESPONSES = [
    *RESPONSES,
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_reader_going_on_to_the_next_response_reads_it_as_a_new_one_would(data):
    """Same events, same end, same verdict on the connection, for any sequence of
    responses, methods and read boundaries; a reader goes on only after a response its
    parser completed whole with nothing after it."""
    reader: ResponseReader | None = None
    for _ in range(data.draw(st.integers(1, 6))):
        raw = data.draw(st.sampled_from(NEXT_RESPONSES))
        method = data.draw(st.sampled_from([b"GET", b"GET", b"HEAD"]))
        parts = data.draw(splits(raw))
        fresh = ResponseReader(LIMITS, method)
        expected = summarize(feed_all(fresh, parts))
        if reader is not None and reader.reusable:
            reader.reset(method)
        else:
            reader = ResponseReader(LIMITS, method)
        assert summarize(feed_all(reader, parts)) == expected
        assert (reader.done, reader.extra, reader.reusable) == (
            fresh.done,
            fresh.extra,
            fresh.reusable,
        )
        if reader.reusable:  # only a clean keep-alive end, parsed by llhttp itself
            assert reader.done and not reader.extra and method != b"HEAD"


def test_which_ends_let_a_reader_go_on() -> None:
    def after(raw: bytes, method: bytes = b"GET", parts: int = 1) -> bool:
        reader = ResponseReader(LIMITS, method)
        cut = len(raw) - 1 if parts == 2 else len(raw)
        feed_all(reader, [raw[:cut], raw[cut:]] if parts == 2 else [raw])
        return reader.reusable

    small = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert after(small)  # parsed whole in one read
    assert not after(small, parts=2)  # the body's end was counted, not parsed
    assert not after(small, b"HEAD")  # the head alone went to the parser
    assert not after(small + b"X")  # bytes after the response
    assert not after(small.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"))
    assert not after(b"HTTP/1.1 200 OK\r\n\r\nbody")  # close-delimited, not done
    assert after(NEXT_RESPONSES[1])  # chunked, parsed to its last chunk
    reader = ResponseReader(LIMITS, b"GET")
    with pytest.raises(RuntimeError):
        reader.reset(b"GET")  # nothing read yet: not at a message's end


def test_every_single_byte_boundary():
    for raw in REQUESTS:
        whole = summarize(RequestReader(LIMITS).feed(raw))
        for i in range(1, len(raw)):
            assert summarize(feed_all(RequestReader(LIMITS), [raw[:i], raw[i:]])) == whole, (raw, i)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(data):
    events = RequestReader(LIMITS).feed(data)
    for ev in events:
        assert isinstance(ev, RequestHead | BodyData | MessageEnd | ParseFailed | TunnelData)


def test_trailers_do_not_join_the_head_fields():
    raw = (
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"
    )
    head = request_events(raw)[0]
    assert [n for n, _ in head.headers] == [b"Host", b"Transfer-Encoding"]
    assert head.fields.get(b"x-checksum") is None
    from tlsgate.http1.writer import upstream_request_head

    upstream_request_head(head, path=b"/", host=b"a", framing=head.framing)  # no mismatch


def test_trailer_flood_is_refused():
    limits = Limits(max_header_count=10)
    raw = (
        b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        + b"".join(b"T%d: x\r\n" % i for i in range(50))
        + b"\r\n"
    )
    assert failure(raw, limits=limits) == 400


def test_fields_lookups_with_and_without_repeated_names():
    single = Fields([(b"Host", b"a"), (b"Content-Type", b"text/html")])
    assert single.get(b"content-type") == b"text/html"
    assert single.get_all(b"host") == [b"a"]
    assert single.get(b"missing") is None and single.get_all(b"missing") == []
    assert single.lower == [b"host", b"content-type"]
    repeated = Fields([(b"Set-Cookie", b"a=1"), (b"Server", b"x"), (b"set-cookie", b"b=2")])
    assert repeated.get(b"set-cookie") == b"a=1"  # the first value, as before
    assert repeated.get_all(b"set-cookie") == [b"a=1", b"b=2"]
    assert repeated.get_all(b"server") == [b"x"]
    end = repeated.end_to_end()
    assert end == [(b"Set-Cookie", b"a=1"), (b"Server", b"x"), (b"set-cookie", b"b=2")]


@given(
    st.lists(st.tuples(st.sampled_from([b"A", b"a", b"B", b"Via", b"vIA"]), st.binary(max_size=3)))
)
def test_fields_index_matches_a_scan(items):
    fields = Fields(items)
    for name in {n.lower() for n, _ in items} | {b"none"}:
        values = [v for n, v in items if n.lower() == name]
        assert fields.get_all(name) == values
        assert fields.get(name) == (values[0] if values else None)


def _end_to_end_by_the_rfc(items, keep=frozenset(), also=frozenset()):
    """RFC 9110 §7.6.1 done the slow way: the reference for Fields.end_to_end."""
    listed = {
        part.strip().lower()
        for name, value in items
        if name.lower() == b"connection"
        for part in value.split(b",")
        if part.strip()
    }
    drop = (HOP_BY_HOP - keep) | FRAMING | also | (listed - keep)
    return [(n, v) for n, v in items if n.lower() not in drop]


_NAMES = [b"Connection", b"connection", b"X-Hop", b"Upgrade", b"Keep-Alive", b"Via", b"Close"]
_VALUES = [
    b"keep-alive",
    b"Keep-Alive",
    b"close",
    b"upgrade",
    b"X-Hop, keep-alive",
    b"Upgrade, x",
    b"",
]


@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=6))
def test_end_to_end_drops_what_the_rfc_drops(items):
    fields = Fields(items)
    upgrade = frozenset({b"upgrade"})
    assert fields.end_to_end() == _end_to_end_by_the_rfc(items)
    assert fields.end_to_end(keep=upgrade) == _end_to_end_by_the_rfc(items, keep=upgrade)
    # the example that needs both branches: an option list naming a field we keep
    ws = [(b"Connection", b"Upgrade, X-Hop"), (b"Upgrade", b"websocket"), (b"X-Hop", b"1")]
    assert Fields(ws).end_to_end(keep=upgrade) == [(b"Upgrade", b"websocket")]
    host = frozenset({b"via"})
    assert fields.end_to_end(also=host) == _end_to_end_by_the_rfc(items, also=host)


def test_each_message_has_its_own_version() -> None:
    """Pipelined and keep-alive messages of different versions, interim responses."""
    events = RequestReader(LIMITS).feed(REQUESTS[-2])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.version for h in heads] == [(1, 0), (1, 1)]
    reader = RequestReader(LIMITS)
    [first] = [
        e
        for e in reader.feed(b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        if isinstance(e, RequestHead)
    ]
    [second] = [e for e in reader.feed(REQUESTS[0]) if isinstance(e, RequestHead)]
    assert (first.version, second.version) == ((1, 0), (1, 1))
    [resp] = [
        e
        for e in ResponseReader(LIMITS, b"GET").feed(RESPONSES[-1])
        if isinstance(e, ResponseHead) and e.status == 200
    ]
    assert resp.version == (1, 0)


def _versioned_requests(versions: list[str]) -> bytes:
    return b"".join(
        b"GET http://a/%d HTTP/%s\r\nHost: a\r\n%s\r\n"
        % (i, v.encode(), b"Connection: keep-alive\r\n" if v == "1.0" else b"")
        for i, v in enumerate(versions)
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_version_read_from_the_first_line_is_llhttps(data) -> None:
    """A message that begins a read has its version read from its first line (1.1),
    any other from llhttp: each is the version it was sent with, wherever reads split
    the stream of pipelined requests or of an interim and a final response."""
    versions = data.draw(st.lists(st.sampled_from(["1.0", "1.1"]), min_size=1, max_size=4))
    raw = _versioned_requests(versions)
    heads = [
        e
        for e in feed_all(RequestReader(LIMITS), data.draw(splits(raw)))
        if isinstance(e, RequestHead)
    ]
    assert [h.version for h in heads] == [(1, int(v[-1])) for v in versions]
    final = data.draw(st.sampled_from(["1.0", "1.1"]))
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/%s 200 OK\r\nContent-Length: 0\r\n\r\n" % (
        final.encode()
    )
    responses = [
        e
        for e in feed_all(ResponseReader(LIMITS, b"GET"), data.draw(splits(raw)))
        if isinstance(e, ResponseHead)
    ]
    assert [r.version for r in responses] == [(1, 1), (1, int(final[-1]))]


@pytest.mark.parametrize(
    "raw",
    [
        # A header line ending like a request line: the first line is the request line.
        b"GET http://a/ HTTP/1.0\r\nX: a HTTP/1.1\r\nHost: a\r\n\r\n",
        # Blank lines before the request (llhttp skips them).
        b"\r\n\r\nGET http://a/ HTTP/1.0\r\nHost: a\r\n\r\n",
        # The request line ended by a bare LF, a later line like a 1.1 request line.
        b"GET http://a/ HTTP/1.0\nX: a HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_a_version_is_never_read_from_another_line(raw) -> None:
    events = RequestReader(LIMITS).feed(raw)
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.version for h in heads] in ([(1, 0)], [])
    assert heads or isinstance(events[0], ParseFailed)
