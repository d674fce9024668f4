"""The session's fast path (simple requests inside an inspected tunnel served in the
protocol callbacks), in process, against real nginx and scripted TLS servers.

Each test checks what the client gets and what is logged, and that the fast path was
(or was not) the one that answered: ``Runtime.fast_served`` counts its answers.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.peers.inprocess import start_proxy
from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI
from tlsgate import build
from tlsgate.http1.reader import ResponseReader
from tlsgate.log.record import LogRecord
from tlsgate.proxy.runtime import Runtime


class Records:
    def __init__(self) -> None:
        self.items: list[LogRecord] = []

    def submit(self, record: LogRecord) -> None:
        self.items.append(record)


@asynccontextmanager
async def gate(
    tmp: Path, pki: TestPKI, ports: list[int], timeouts: dict[str, float] | None = None
) -> AsyncIterator[tuple[Runtime, int, Path, Records]]:
    records = Records()
    runtime, server, ca = await start_proxy(
        tmp / "home", pki.ca_cert, ports, records, timeouts=timeouts
    )
    try:
        yield runtime, server.sockets[0].getsockname()[1], ca, records
    finally:
        server.close()
        runtime.pool.close_all()


class Client:
    """One inspected connection through the proxy: CONNECT, TLS with tlsgate's CA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, proxy_port: int, ca: Path, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, port))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        ctx = ssl.create_default_context(cafile=str(ca))
        await writer.start_tls(ctx, server_hostname="localhost")
        return cls(reader, writer)

    def send(self, path: str, *, method: str = "GET", body: bytes = b"") -> None:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        self.writer.write(
            b"%s %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n%s"
            % (method.encode(), path.encode(), length, body)
        )

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(timeout):
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            status = int(lines[0].split()[1])
            fields = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields, body

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.send(path)
        return await self.response()

    async def closed(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def warm_client(
    tmp: Path, pki: TestPKI, port: int, first: str, timeouts: dict[str, float] | None = None
) -> AsyncIterator[tuple[Runtime, Client, Records, bytes]]:
    """A gate, and a client through it to localhost:``port`` that got ``first`` (its
    body is yielded).  That first request may come with the client's TLS Finished,
    before the session waits for requests: the task serves it, not the fast path."""
    async with gate(tmp, pki, [port], timeouts) as (rt, proxy_port, ca, records):
        client = await Client.open(proxy_port, ca, port)
        status, _, body = await client.get(first)
        assert status == 200
        try:
            yield rt, client, records, body
        finally:
            client.close()


Script = Callable[[int, int, bytes, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_origin(pki: TestPKI, script: Script) -> AsyncIterator[int]:
    """A TLS server (certificate for localhost from the test CA) that hands each request
    head to ``script(connection_number, request_number, head, writer)``; yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    valid = pki.preset("valid")
    ctx.load_cert_chain(valid.chain, valid.key)
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        number = accepted
        try:
            for request in range(1, 1000):
                head = await reader.readuntil(b"\r\n\r\n")
                await script(number, request, head, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def slow_echo(conn: int, request: int, head: bytes, writer: asyncio.StreamWriter) -> None:
    """Answers with the request's path; ``/slow`` after 0.3 s."""
    if b"/slow" in head:
        await asyncio.sleep(0.3)
    writer.write(ok(head.split(b" ")[1]))


Body = Callable[[Runtime, Client, Records], Awaitable[None]]


def through_nginx(tmp_path: Path, pki: TestPKI, nginx: NginxServer, body: Body) -> Records:
    """Run ``body`` with a client warmed up (``/1k.bin``) through a gate to nginx's TLS
    block; the records of the whole run."""
    port = nginx.port("tls")

    async def run() -> Records:
        async with warm_client(tmp_path, pki, port, "/1k.bin") as (rt, client, records, _):
            await body(rt, client, records)
        return records

    return asyncio.run(run())


def test_keep_alive_requests_take_the_fast_path_and_log_like_the_task(
    tmp_path: Path, pki: TestPKI, nginx: NginxServer
) -> None:
    async def body(rt: Runtime, client: Client, _: Records) -> None:
        base = rt.fast_served
        for _ in range(10):
            status, fields, content = await client.get("/1k.bin")
            assert status == 200 and content == nginx.content("/1k.bin")
            assert "tlsgate" in fields["via"]
        assert rt.fast_served == base + 10
        # The pooled server connection keeps its response reader for the next response
        # (a new parser per request cost ~2 % of a request's instructions).
        idle = [conn for stack in rt.pool._idle.values() for conn, _ in stack]
        assert idle and all(
            isinstance(c.response_reader, ResponseReader) and c.response_reader.reusable
            for c in idle
        )
        client.send("/upload/fast.bin", method="PUT", body=b"x" * 100)  # a body: the task
        status, _, _ = await client.response()
        assert status in (201, 204) and rt.fast_served == base + 10

    records = through_nginx(tmp_path, pki, nginx, body)
    fast, slow = records.items[-2], records.items[-1]
    assert (fast.status, fast.mime_type) == (200, "application/octet-stream")
    assert fast.bytes_sent == 1024 and fast.url == "https://localhost/1k.bin"
    assert fast.time_taken_ms >= 0 and fast.request_id != slow.request_id
    for name in (
        "protocol",
        "inspection",
        "rule",
        "source_network",
        "dest_network",
        "tls_version",
        "upstream_cert_subject",
        "dest_host",
        "dest_port",
        "dest_ip",
        "client_ip",
        "user",
        "action",
        "object_source",
    ):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast.protocol == "https-inspect" and fast.rule == "Allow web access"


_SOURCES = str(Path(build.__file__).parent)


def _interpreted_tlsgate(frame: Any, compiled: bool) -> str | None:
    """The name of a tlsgate function ``frame`` runs in the interpreter, or None.

    A method ``dataclasses`` or ``NamedTuple`` generated (code from ``<string>``) is
    interpreted even in a compiled module; with the ``compiled`` build, any tlsgate
    source frame is interpreted."""
    code = frame.f_code
    if code.co_filename == "<string>":  # generated: a dataclass's self, a NamedTuple's _cls
        owner = frame.f_locals.get("self", frame.f_locals.get("_cls"))
        cls = owner if isinstance(owner, type) else type(owner)
        if cls.__module__.startswith("tlsgate."):
            return f"{cls.__qualname__}.{code.co_name} (generated)"
    if compiled and code.co_filename.startswith(_SOURCES):
        return f"{code.co_filename}:{code.co_firstlineno} {code.co_qualname}"
    return None


async def interpreted_calls(work: Callable[[], Awaitable[None]]) -> Counter[str]:
    """The tlsgate functions run interpreted (see above) while ``work`` runs."""
    seen: Counter[str] = Counter()
    compiled = build.compiled()  # once: the hook sees every frame

    def profile(frame: Any, event: str, _: object) -> None:
        if event == "call" and (name := _interpreted_tlsgate(frame, compiled)) is not None:
            seen[name] += 1

    sys.setprofile(profile)
    try:
        await work()
    finally:
        sys.setprofile(None)
    return seen


def test_a_fast_path_request_runs_no_interpreted_tlsgate_code(
    tmp_path: Path, pki: TestPKI, nginx: NginxServer
) -> None:
    """The hot path stays native: a dataclass's generated ``__init__`` once cost 16 % of
    a keep-alive request's instructions (BENCHMARKS.md); none may come back unnoticed."""

    async def body(rt: Runtime, client: Client, _: Records) -> None:
        base = rt.fast_served

        async def requests() -> None:
            for _ in range(20):
                status, _, content = await client.get("/1k.bin")
                assert status == 200 and content == nginx.content("/1k.bin")

        seen = await interpreted_calls(requests)
        assert rt.fast_served == base + 20
        assert not seen, f"interpreted per request: {dict(seen)}"

    through_nginx(tmp_path, pki, nginx, body)


def test_a_plain_http_request_runs_no_interpreted_tlsgate_code(
    tmp_path: Path, pki: TestPKI, nginx: NginxServer
) -> None:
    """The same for plain HTTP keep-alive (absolute-form requests, served by the task)."""
    port = nginx.port("plain")
    request = b"GET http://localhost:%d/1k.bin HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (
        port,
        port,
    )

    async def run() -> Counter[str]:
        async with gate(tmp_path, pki, [port]) as (_, proxy_port, _, _):
            client = Client(*await asyncio.open_connection("127.0.0.1", proxy_port))

            async def requests(count: int = 20) -> None:
                for _ in range(count):
                    client.writer.write(request)
                    status, _, content = await client.response()
                    assert status == 200 and content == nginx.content("/1k.bin")

            await requests(1)  # the pool's server connection, the caches
            seen = await interpreted_calls(requests)
            client.writer.close()
        return seen

    seen = asyncio.run(run())
    assert not seen, f"interpreted per request: {dict(seen)}"


def test_a_large_response_is_handed_to_the_task_and_arrives_whole(
    tmp_path: Path, pki: TestPKI, nginx: NginxServer
) -> None:
    async def body(rt: Runtime, client: Client, _: Records) -> None:
        base = rt.fast_served
        status, _, content = await client.get("/1m.bin")
        assert status == 200 and content == nginx.content("/1m.bin")
        assert rt.fast_served == base  # 1 MiB comes in many deliveries: the task's
        assert (await client.get("/1k.bin"))[2] == nginx.content("/1k.bin")
        assert rt.fast_served == base + 1

    records = through_nginx(tmp_path, pki, nginx, body)
    assert [r.bytes_sent for r in records.items] == [1024, 1 << 20, 1024]


def test_a_pooled_connection_the_server_dropped_is_retried_on_a_fresh_one(
    tmp_path: Path, pki: TestPKI
) -> None:
    async def script(conn: int, request: int, head: bytes, writer: asyncio.StreamWriter) -> None:
        if conn == 1 and request == 2:
            writer.transport.abort()  # gave up on the idle connection: no answer
            return
        writer.write(ok(b"conn %d request %d" % (conn, request)))

    async def run() -> None:
        async with (
            scripted_origin(pki, script) as port,
            warm_client(tmp_path, pki, port, "/a") as (rt, client, records, first),
        ):
            assert first == b"conn 1 request 1"
            base = rt.fast_served
            status, _, body = await client.get("/b")
            assert (status, body) == (200, b"conn 2 request 1")
            assert rt.fast_served == base  # /b went back to the task, which retried
            assert (await client.get("/c"))[2] == b"conn 2 request 2"
            assert rt.fast_served == base + 1
        assert [r.status for r in records.items] == [200, 200, 200]

    asyncio.run(run())


def test_a_server_that_does_not_answer_gets_504_on_the_fast_path(
    tmp_path: Path, pki: TestPKI
) -> None:
    async def script(conn: int, request: int, head: bytes, writer: asyncio.StreamWriter) -> None:
        if request == 1:
            writer.write(ok(b"first"))
        # the second request is never answered

    async def run() -> None:
        timeouts = {"upstream_response": 1.0}
        async with (
            scripted_origin(pki, script) as port,
            warm_client(tmp_path, pki, port, "/a", timeouts) as (_, client, records, first),
        ):
            assert first == b"first"
            status, fields, body = await client.get("/b")
            assert status == 504 and b"did not answer within 1 s" in body
            assert fields["x-tlsgate-status"] == "504"
            assert await client.closed()
        statuses = [(r.status, r.action) for r in records.items]
        assert statuses == [(200, "Allowed"), (504, "Failed")]

    asyncio.run(run())


def through_slow_echo(tmp_path: Path, pki: TestPKI, body: Body) -> None:
    """Run ``body`` with a client warmed up (``/warm``) through a gate to ``slow_echo``."""

    async def run() -> None:
        async with (
            scripted_origin(pki, slow_echo) as port,
            warm_client(tmp_path, pki, port, "/warm") as (rt, client, records, first),
        ):
            assert first == b"/warm"
            await body(rt, client, records)

    asyncio.run(run())


def test_a_request_sent_while_one_is_in_flight_is_answered_after_it(
    tmp_path: Path, pki: TestPKI
) -> None:
    async def body(rt: Runtime, client: Client, _: Records) -> None:
        base = rt.fast_served
        client.send("/slow")
        await asyncio.sleep(0.05)  # /slow is in flight on the fast path
        client.send("/next")
        assert (await client.response())[2] == b"/slow"
        assert (await client.response())[2] == b"/next"
        client.send("/p1")
        client.send("/p2")  # pipelined: whatever arrives together goes to the task
        assert (await client.response())[2] == b"/p1"
        assert (await client.response())[2] == b"/p2"
        assert rt.fast_served >= base + 1  # /slow
        assert (await client.get("/last"))[2] == b"/last"

    through_slow_echo(tmp_path, pki, body)


def test_a_client_that_leaves_during_a_fast_request_leaves_no_session_behind(
    tmp_path: Path, pki: TestPKI
) -> None:
    async def body(rt: Runtime, client: Client, records: Records) -> None:
        base = rt.fast_served
        client.send("/slow")
        await asyncio.sleep(0.05)  # in flight on the fast path
        client.close()
        await asyncio.sleep(0.6)  # the answer came after the session ended
        assert rt.fast_served == base + 1
        assert not rt.sessions and not rt.idle_sessions
        urls = [r.url for r in records.items]
        assert urls == ["https://localhost/warm", "https://localhost/slow"]

    through_slow_echo(tmp_path, pki, body)
