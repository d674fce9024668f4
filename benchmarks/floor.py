"""Benchmark: how far tlsgate's keep-alive path is from the floor, and where the rest goes.

``python -m benchmarks.cpu_per_request`` gives tlsgate's CPU per inspected keep-alive
request.  This puts beside it a minimal inspecting relay built here in layers, each
measured with the same nginx and ``curl --parallel-max 8`` (same ``cpu_rounds``):

    raw        TLS through ssl.MemoryBIO on both sides, httptools, heads rebuilt without
               hop-by-hop fields, upstream connections pooled, callbacks only: the cost
               of the syscalls, OpenSSL and the parser, and little else
    http1      + tlsgate's HTTP/1 readers (validation, limits, events) and writer
    record     + a Web Proxy log record per request, filled in (not submitted)
    policy     + tlsgate's access policy decision per request
    coroutine  + one coroutine per client connection, woken twice per request (when the
               request is complete, and when the response is), as tlsgate's session is
    tlsgate    tlsgate's own proxy (log off), as ``benchmarks.cpu_per_request`` runs it

    python -m benchmarks.floor [--requests 20000] [--rounds 3] [--stages raw,...,tlsgate]
    python -m benchmarks.floor --serve 127.0.0.1:PORT --home DIR --upstream-ca FILE [--stage raw]

``--serve`` runs one stage as a proxy process until it is stopped (its CA certificate
in ``DIR/ca/ca.pem``): ``benchmarks.run`` puts it in the side-by-side table as
``relay-raw`` (by default, or ``--proxies squid,tlsgate,relay-raw``), so every run shows
what a relay with none of tlsgate's features reaches beside Squid on the same machine
(keep-alive workloads only).

The relay is a measuring stick, not a proxy: it serves one upstream, has no timeouts,
errors or limits of its own, and trusts everything it is told.  Every response is still
checked (status 200 and 1,024 bytes) and failures are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import httptools

from benchmarks.cpu_per_request import (
    cpu_rounds,
    rounds_parser,
    run_measure,
    start_tlsgate,
    url_file,
)
from tlsgate import eventloop
from tlsgate.config.home import Home
from tlsgate.config.loader import parse_config
from tlsgate.config.model import TlsgateConfig
from tlsgate.http1 import writer
from tlsgate.http1.events import BodyData, Framing, MessageEnd, RequestHead, ResponseHead
from tlsgate.http1.headers import HOP_BY_HOP
from tlsgate.http1.reader import RequestReader, ResponseReader
from tlsgate.log.record import LogRecord
from tlsgate.policy.access import AccessFacts, AccessPolicy
from tlsgate.tls.ca import LeafMinter, load_or_create_ca

STAGES = ("raw", "http1", "record", "policy", "coroutine", "tlsgate")
_RAW, _HTTP1, _RECORD, _POLICY, _COROUTINE = range(5)
_READ = 256 * 1024


class _Pump:
    """TLS over a transport through two memory BIOs (as tlsgate's Connection does)."""

    __slots__ = ("incoming", "outgoing", "tls", "transport")

    def __init__(
        self, ctx: ssl.SSLContext, transport: Any, *, server_side: bool, name: str | None
    ) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side, name)
        self.transport = transport

    def flush(self) -> None:
        if self.outgoing.pending:
            self.transport.write(self.outgoing.read())

    def write(self, data: bytes) -> None:
        self.tls.write(data)
        self.flush()

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        self.flush()
        return True

    def receive(self, data: bytes) -> list[bytes]:
        """Plaintext for ``data`` (the handshake must be done)."""
        self.incoming.write(data)
        out = []
        while self.incoming.pending or self.tls.pending():
            try:
                chunk = self.tls.read(_READ)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            out.append(chunk)
        self.flush()
        return out


def _raw_head(start: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [start]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Relay:
    """What the connections share: the stage, the leaf minter, the pool, the policy."""

    def __init__(self, stage: int, home: Home, upstream_ca: Path, config: TlsgateConfig):
        self.stage = stage
        self.minter = LeafMinter(load_or_create_ca(home), home)
        self.upstream_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self.limits = config.limits
        self.policy = AccessPolicy.compile(config)
        self.pool: list[_Upstream] = []
        self.tasks: set[asyncio.Future[None]] = set()

    def forward(self, client: _Client, request: bytes, method: bytes) -> None:
        if self.pool:
            self.pool.pop().send(client, request, method)
        else:
            self.tasks.add(asyncio.ensure_future(self._connect(client, request, method)))

    async def _connect(self, client: _Client, request: bytes, method: bytes) -> None:
        loop = asyncio.get_running_loop()
        host, port = client.authority
        _, up = await loop.create_connection(lambda: _Upstream(self, host), host, port)
        up.send(client, request, method)


class _Upstream(asyncio.Protocol):
    def __init__(self, relay: _Relay, host: str) -> None:
        self.relay, self.host = relay, host
        self.client: _Client | None = None
        self.ready = False
        self.pending = b""
        self.parser: Any = None
        self.reader: ResponseReader | None = None
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: Any) -> None:
        self.pump = _Pump(self.relay.upstream_ctx, transport, server_side=False, name=self.host)
        self.ready = self.pump.handshake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.relay.pool:
            self.relay.pool.remove(self)

    def send(self, client: _Client, request: bytes, method: bytes) -> None:
        self.client = client
        if self.relay.stage >= _HTTP1:
            self.reader = ResponseReader(self.relay.limits, method)
        else:
            self.parser = httptools.HttpResponseParser(self)
        if self.ready:
            self.pump.write(request)
        else:
            self.pending = request

    def data_received(self, data: bytes) -> None:
        if not self.ready:
            self.pump.incoming.write(data)
            self.ready = self.pump.handshake()
            if not self.ready:
                return
            if self.pending:
                self.pump.write(self.pending)
                self.pending = b""
            data = b""
        for chunk in self.pump.receive(data):
            if self.reader is None:
                self.parser.feed_data(chunk)
                continue
            for ev in self.reader.feed(chunk):
                self._event(ev)
            if self.reader.done:
                self._done()

    def _event(self, ev: object) -> None:
        assert self.client is not None
        if isinstance(ev, ResponseHead):
            head = writer.client_response_head(
                ev, framing=ev.framing, keep_alive=True, client_version=(1, 1)
            )
            self.client.out.append(head)
            if self.client.record is not None:
                self.client.record.status = ev.status
        elif isinstance(ev, BodyData):
            self.client.out.append(ev.data)

    def _done(self) -> None:
        client, self.client = self.client, None
        self.relay.pool.append(self)
        assert client is not None
        client.answered()

    # httptools callbacks (raw stage)
    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.client is not None
        status = b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()
        self.client.out.append(_raw_head(status, self.headers))

    def on_body(self, body: bytes) -> None:
        assert self.client is not None
        self.client.out.append(body)

    def on_message_complete(self) -> None:
        self._done()


class _Client(asyncio.Protocol):
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.buffer = b""
        self.pump: _Pump | None = None
        self.handshaken = False
        self.out: list[bytes] = []
        self.record: LogRecord | None = None
        self.heads: list[RequestHead] = []
        self.request_waiter: asyncio.Future[None] | None = None
        self.response_waiter: asyncio.Future[None] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        if self.pump is None:
            self._connect(data)
            return
        if not self.handshaken:
            self.pump.incoming.write(data)
            self.handshaken = self.pump.handshake()
            if not self.handshaken:
                return
            data = b""  # the request may have come with the client's Finished
        for chunk in self.pump.receive(data):
            if self.relay.stage == _RAW:
                self.parser.feed_data(chunk)
                continue
            for ev in self.reader.feed(chunk):
                if isinstance(ev, RequestHead):
                    self.heads.append(ev)
                elif isinstance(ev, MessageEnd):
                    self._request_complete()

    def _connect(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        target = self.buffer.split(b" ", 2)[1].decode()
        host, port = target.rsplit(":", 1)
        self.authority = (host, int(port))
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.pump = _Pump(
            self.relay.minter.context_for(host), self.transport, server_side=True, name=None
        )
        if self.relay.stage == _RAW:
            self.parser = httptools.HttpRequestParser(self)
        else:
            self.reader = RequestReader(self.relay.limits, in_tunnel=True)
        if self.relay.stage >= _COROUTINE:
            self.task = asyncio.ensure_future(self._serve())

    def _request_complete(self) -> None:
        if self.relay.stage < _COROUTINE:
            self._forward(self.heads.pop())
            return
        waiter, self.request_waiter = self.request_waiter, None
        if waiter is not None:
            waiter.set_result(None)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.heads:
                self.request_waiter = loop.create_future()
                await self.request_waiter
            self.response_waiter = loop.create_future()
            self._forward(self.heads.pop(0))
            await self.response_waiter

    def _forward(self, head: RequestHead) -> None:
        relay = self.relay
        host = head.fields.get(b"host") or b""
        if relay.stage >= _RECORD:
            self.started = time.monotonic()
            rec = self.record = LogRecord(member="floor", client_ip=self.peer[0])
            rec.client_port = self.peer[1]
            rec.method = head.method.decode("latin-1")
            rec.agent = (head.fields.get(b"user-agent") or b"").decode("latin-1")
            rec.url = f"https://{host.decode('latin-1')}{head.raw_target.decode('latin-1')}"
            rec.dest_host, rec.dest_port = self.authority
            rec.protocol, rec.inspection = "https-inspect", "inspect"
            if relay.stage >= _POLICY:
                host_name, port = self.authority
                path = head.raw_target.decode("latin-1")
                facts = AccessFacts(
                    self.peer[0], None, False, rec.method, "https", host_name, port, path, False
                )
                rec.rule = relay.policy.decide(facts).rule
        request = writer.upstream_request_head(
            head, path=head.raw_target, host=host, framing=Framing.NONE
        )
        relay.forward(self, request, head.method)

    def answered(self) -> None:
        assert self.pump is not None
        self.pump.write(b"".join(self.out))
        self.out.clear()
        if self.record is not None:
            self.record.time_taken_ms = int((time.monotonic() - self.started) * 1000)
            self.record = None
        waiter, self.response_waiter = self.response_waiter, None
        if waiter is not None:
            waiter.set_result(None)

    # httptools callbacks (raw stage)
    def on_message_begin(self) -> None:
        self.headers, self.url = [], b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        request = _raw_head(method + b" " + self.url + b" HTTP/1.1\r\n", self.headers)
        self.relay.forward(self, request, method)


async def _measure_stage(
    stage: str, work: Path, nginx: Any, pki: Any, args: argparse.Namespace
) -> tuple[float, int]:
    port = nginx.port("tls")
    urls = url_file(work, f"https://localhost:{port}/1k.bin", args.requests)
    print(f"-- {stage}")
    if stage == "tlsgate":
        server, ca_cert, _ = await start_tlsgate(work / stage, nginx, pki, plain=False, log="off")
    else:
        home = Home(work / stage).ensure()
        config = parse_config({}, source="floor")
        relay = _Relay(STAGES.index(stage), home, pki.ca_cert, config)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Client(relay), "127.0.0.1", 0)
        ca_cert = home.ca_cert
    proxy_port = server.sockets[0].getsockname()[1]
    try:
        return await cpu_rounds(proxy_port, ca_cert, urls, args.requests, args.rounds)
    finally:
        server.close()


async def _measure(args: argparse.Namespace, work: Path, nginx: Any, pki: Any) -> None:
    results = [(s, await _measure_stage(s, work, nginx, pki, args)) for s in args.stages]
    print("\n| stage | CPU per request (best) | added by the stage | failed |")
    print("|---|---:|---:|---:|")
    before = None
    for stage, (best, failed) in results:
        added = "" if before is None else f"{best - before:+.1f} us"
        print(f"| {stage} | {best:.1f} us | {added} | {failed} |")
        before = best


async def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.serve.rpartition(":")
    home = Home(Path(args.home)).ensure()
    relay = _Relay(
        STAGES.index(args.stage), home, Path(args.upstream_ca), parse_config({}, source="floor")
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(relay), host, int(port))
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = rounds_parser(__doc__)
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}"
    )
    parser.add_argument("--serve", metavar="HOST:PORT", help="run one stage as a proxy process")
    parser.add_argument("--home", help="with --serve: the relay's CA directory")
    parser.add_argument(
        "--upstream-ca", help="with --serve: the CA file the upstream's certificate chains to"
    )
    serve_stages = STAGES[:-1]  # "tlsgate" is tlsgate serve itself
    parser.add_argument("--stage", default="raw", choices=serve_stages, help="with --serve (raw)")
    args = parser.parse_args(argv)
    if args.serve:
        if not (args.home and args.upstream_ca and ":" in args.serve):
            parser.error("--serve HOST:PORT needs --home DIR and --upstream-ca FILE")
        eventloop.run(eventloop.choose(args.loop), _serve(args))
        return 0
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown or not args.stages:
        parser.error(f"unknown stage {', '.join(unknown) or '(none)'}; use: {', '.join(STAGES)}")
    return run_measure(parser, args, _measure, "tlsgate-floor-")


if __name__ == "__main__":
    sys.exit(main())
