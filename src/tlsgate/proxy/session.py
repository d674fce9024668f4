"""One client connection: HTTP/1.1 requests, CONNECT, inspection and tunnels.

The order for an inspected CONNECT is server first (as TMG documents it): connect to
the server, answer 200, read the client's ClientHello and keep its bytes, handshake
with the server using the same SNI, and only then decide (policy/inspection.py):
complete TLS with the client under a leaf from tlsgate's CA, or replay the
ClientHello to a fresh server connection and splice (client certificates), or answer
every request with the reason it cannot be served.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Final

from tlsgate.config.model import Limits
from tlsgate.errors import ProtocolError, UpstreamError
from tlsgate.http1 import writer
from tlsgate.http1.events import (
    END,
    BodyData,
    Framing,
    MessageEnd,
    ParseFailed,
    RequestEvent,
    RequestHead,
    ResponseHead,
    TunnelData,
)
from tlsgate.http1.reader import RequestReader, ResponseReader
from tlsgate.http1.target import Authority
from tlsgate.log.record import OBJECT_SOURCE_INTERNET, LogRecord
from tlsgate.policy import inspection
from tlsgate.policy.access import ANONYMOUS, SELF_REASON, AccessFacts
from tlsgate.policy.auth import NO_CREDENTIALS, parse_proxy_authorization
from tlsgate.proxy.connection import Connection
from tlsgate.proxy.runtime import Runtime
from tlsgate.proxy.upstream import UpstreamKey, connect, tls_version, upstream_key
from tlsgate.status import lookup
from tlsgate.tls.clienthello import ClientHello, ClientHelloReader, MalformedClientHello, NotTLS
from tlsgate.tls.upstream import classify_tls_error, client_cert_requested, verification_detail

log = logging.getLogger("tlsgate.proxy")

# Framing's singletons and END as this module's own Final names: mypyc reads these as C
# statics, where ``Framing.NONE`` is an attribute lookup on the class (~165 instructions)
# and an imported name a dict lookup; a proxied request reads them ~25 times.
_NONE: Final = Framing.NONE
_CHUNKED: Final = Framing.CHUNKED
_CLOSE: Final = Framing.CLOSE
_END: Final = END


class _ClientGone(Exception):
    """The client closed or broke the connection; nothing more can be sent."""


@dataclass(slots=True)
class Tunnel:
    """An inspected CONNECT: where its requests go and what is known about the server."""

    authority: Authority
    sni: str | None
    key: UpstreamKey
    failure: UpstreamError | None = None
    tls_version: str = ""
    cert_subject: str = ""
    fix_commands: list[str] | None = None


@dataclass(slots=True)
class _Resume:
    """The fast path's hand-over: the request went out on ``up``; the session's task
    relays the response with :meth:`Session._relay`, from its first byte."""

    head: RequestHead
    up: Connection
    key: UpstreamKey
    rec: LogRecord
    started: float


def _describe(head: RequestHead, rec: LogRecord) -> None:
    rec.method = head.method.decode("latin-1")
    rec.agent = (head.fields.get(b"user-agent") or b"").decode("latin-1")
    rec.referrer = (head.fields.get(b"referer") or b"").decode("latin-1")


def _inspected(head: RequestHead, tunnel: Tunnel, rec: LogRecord) -> bytes:
    """Fill the record of a request inside an inspected tunnel; its Host."""
    host_header = head.fields.get(b"host") or str(tunnel.authority).encode()
    rec.protocol = "https-inspect"
    rec.inspection = "inspect"
    rec.tls_version = tunnel.tls_version
    rec.upstream_cert_subject = tunnel.cert_subject
    rec.url = f"https://{host_header.decode('latin-1')}{head.raw_target.decode('latin-1')}"
    return host_header


def _subject(tls: ssl.SSLObject | None) -> str:
    if tls is None:
        return ""
    cert = tls.getpeercert()
    if not cert:
        return ""
    parts = []
    for rdn in cert.get("subject", ()):
        for attr in rdn:
            parts.append(f"{attr[0]}={attr[1]}")
    return ", ".join(parts)


def _san_names(tls: ssl.SSLObject | None) -> tuple[str, ...]:
    if tls is None:
        return ()
    cert = tls.getpeercert() or {}
    sans = cert.get("subjectAltName", ())
    return tuple(str(entry[1]) for entry in sans if entry[0] == "DNS")


class Session:
    """Serves one accepted client connection until it closes."""

    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.rt = runtime
        self.conn = conn
        self.events: deque[RequestEvent | _Resume] = deque()
        self.reader = RequestReader(runtime.limits)
        self.busy = False
        self.user: str | None = None
        self.authenticated = False
        self.handed_off = False
        """The connection became a tunnel that outlives this session."""
        self._fast_tunnel: Tunnel | None = None

    # -- plumbing -------------------------------------------------------------------------
    async def _next(self, timeout: float) -> RequestEvent | _Resume | None:
        """The next request event, reading more as needed; None at end of stream."""
        while not self.events:
            try:
                data = await self.conn.read(timeout)
            except TimeoutError:
                raise ProtocolError(408, "the client sent nothing in time") from None
            if not data:
                return None
            self.events.extend(self.reader.feed(data))
        return self.events.popleft()

    async def _next_head(self, tunnel: Tunnel | None) -> RequestEvent | _Resume | None:
        """The next request's first event.  Waiting for it may take ``client_idle``; once
        its first byte arrived, the whole head must follow within ``client_header``
        (an absolute deadline, so a client dripping a byte at a time cannot hold on).

        Inside an inspected tunnel, simple requests are served while this waits, by
        :meth:`_fast_request`; what it cannot serve comes back here as events (or as a
        :class:`_Resume`) with a :meth:`Connection.kick`."""
        t = self.rt.config.timeouts
        deadline: float | None = None
        fast = tunnel is not None and tunnel.failure is None
        try:
            while not self.events:
                if fast and deadline is None:
                    self._fast_tunnel = tunnel
                    self.conn.on_data = self._fast_request
                timeout = t.client_idle if deadline is None else max(0.0, deadline - monotonic())
                try:
                    data = await self.conn.read(timeout)
                except TimeoutError:
                    if deadline is None:
                        raise ProtocolError(0, "idle") from None
                    raise ProtocolError(
                        408, f"the request head did not arrive within {t.client_header:g} s"
                    ) from None
                if data:
                    if deadline is None:
                        deadline = monotonic() + t.client_header
                    self.events.extend(self.reader.feed(data))
                elif not self.events and self.conn.at_eof:
                    return None
        finally:
            self.conn.on_data = None
        return self.events.popleft()

    def _send(self, data: bytes) -> None:
        if self.conn.closed:
            raise _ClientGone
        self.conn.write(data)

    async def _flush(self) -> None:
        if self.conn.writing_paused:
            try:
                await self.conn.drain()
            except ConnectionError:
                raise _ClientGone from None

    def _record(self) -> LogRecord:
        ip, port = self.conn.peer
        return LogRecord(member=self.rt.member, client_ip=ip, client_port=port)

    def _finish(self, rec: LogRecord, started: float) -> None:
        _submit(self.rt, rec, started)

    def _fail(
        self,
        rec: LogRecord,
        status_code: int,
        detail: str,
        *,
        keep_alive: bool = False,
        head_only: bool = False,
        fix: list[str] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        st = lookup(status_code)
        page = writer.error_response(
            st,
            detail=detail,
            url=rec.url,
            request_id=rec.request_id,
            fix_commands=fix,
            keep_alive=keep_alive,
            head_only=head_only,
            extra_headers=extra_headers,
        )
        rec.status = status_code
        rec.error_info = detail
        if rec.action == "Allowed":
            rec.action = "Failed"
        if not self.conn.closed:
            self.conn.write(page)
            rec.bytes_sent += len(page)

    # -- the fast path ------------------------------------------------------------------------
    def _fast_request(self, data: bytes) -> bool:
        """``on_data`` of an idle inspected client connection: serve a simple request
        (bodyless, allowed, a pooled server connection ready) in the protocol callbacks,
        without waking the session's task twice per request (~14 us of ~109 per
        keep-alive request, BENCHMARKS.md).  False if ``data`` is not exactly one request
        head: the task reads it as always.  What it takes but does not serve goes back
        to the task as the reader's events, before anything was sent anywhere."""
        if not data.endswith(b"\r\n\r\n") or data.find(b"\r\n\r\n") != len(data) - 4:
            return False
        tunnel = self._fast_tunnel
        events = self.reader.feed(data)
        head = events[0] if len(events) == 2 and events[1] is _END else None
        if (
            tunnel is None
            or not isinstance(head, RequestHead)
            or head.connect is not None
            or head.framing is not _NONE
            or head.upgrade is not None
            or head.expect_continue
            or not head.keep_alive
            or self.rt.draining
        ):
            self._to_task(events)
            return True
        rec = self._record()
        started = monotonic()
        _describe(head, rec)
        host_header = _inspected(head, tunnel, rec)
        authority = tunnel.authority
        rec.dest_host, rec.dest_port = authority.host, authority.port
        path = head.raw_target.decode("latin-1")
        up = None
        if self._check_access(head, rec, "https", authority, path) is None:
            up = self.rt.pool.get(tunnel.key)
        if up is None:  # denied, or no idle server connection: the task does it
            self._to_task(events)
            return True
        up_head = writer.upstream_request_head(
            head, path=head.raw_target, host=host_header, framing=_NONE
        )
        rec.dest_ip = up.peer[0]
        up.write(up_head)
        rec.bytes_received += len(up_head)
        self.busy = True
        self.rt.idle_sessions.discard(self)
        self.conn.hold()  # a pipelined request waits until this one is answered
        _FastResponse(self, head, up, tunnel.key, rec, started)
        return True

    def _to_task(self, items: Iterable[RequestEvent | _Resume]) -> None:
        """Give work to the session's task, waiting in :meth:`_next_head`."""
        self.conn.release(self.rt.client_idle)
        self.events.extend(items)
        self.conn.kick()

    def _fast_done(self, keep_client: bool) -> None:
        """A fast request was answered: the client connection is idle again, or closes."""
        conn = self.conn
        if not keep_client or self not in self.rt.sessions:
            conn.close()  # the task's read sees the end and the session ends (or has)
            conn.release(self.rt.client_idle)
            return
        self.busy = False
        self.rt.idle_sessions.add(self)
        if conn.release(self.rt.client_idle):
            return  # bytes came meanwhile: the task reads them
        if not conn.writing_paused and not self.rt.draining:
            conn.on_data = self._fast_request

    # -- main loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        self.rt.sessions.add(self)
        try:
            await self._serve_requests(None)
        except _ClientGone:
            pass
        except (ConnectionError, ssl.SSLError) as exc:
            log.debug("client %s: %s", self.conn.peer, exc)
        finally:
            self.rt.sessions.discard(self)
            self.rt.idle_sessions.discard(self)
            if not self.handed_off:
                self.conn.close()

    async def _serve_requests(self, tunnel: Tunnel | None) -> None:
        while not self.rt.draining:
            self.busy = False
            self.rt.idle_sessions.add(self)
            try:
                ev = await self._next_head(tunnel)
            except ProtocolError as exc:
                if exc.status == 408:  # a head started but did not finish in time
                    rec = self._record()
                    rec.protocol = "https-inspect" if tunnel else "http"
                    self._fail(rec, 408, exc.message)
                    self._finish(rec, monotonic())
                return  # or: an idle keep-alive connection timed out; close quietly
            finally:
                self.rt.idle_sessions.discard(self)
            self.busy = True
            if ev is None:
                return
            if isinstance(ev, _Resume):  # the fast path handed its response over
                keep = await self._relay(ev.head, ev.up, ev.key, ev.rec, retry_ok=False)
                self._finish(ev.rec, ev.started)
                if not keep:
                    return
                continue
            started = monotonic()
            rec = self._record()
            if isinstance(ev, ParseFailed):
                rec.protocol = "https-inspect" if tunnel else "http"
                self._fail(rec, ev.error.status, ev.error.message)
                self._finish(rec, started)
                return
            if not isinstance(ev, RequestHead):
                return
            if not await self._request(ev, tunnel, rec, started):
                return

    async def _request(
        self, head: RequestHead, tunnel: Tunnel | None, rec: LogRecord, started: float
    ) -> bool:
        """Serve one request; True if the client connection stays open for another."""
        _describe(head, rec)
        if head.connect is not None:
            if tunnel is not None:
                rec.protocol = "https-inspect"
                self._fail(rec, 400, "CONNECT inside an inspected connection is not supported")
                self._finish(rec, started)
                return False
            rec.url, rec.protocol = str(head.connect), "SSL-tunnel"
            rec.dest_host, rec.dest_port = head.connect.host, head.connect.port
            if await self._authorize(head, None, rec, "https", head.connect, ""):
                await self._connect(head, head.connect, rec, started)
            else:
                self._finish(rec, started)
            return False

        if tunnel is not None:
            authority, scheme, path, key = tunnel.authority, "https", head.raw_target, tunnel.key
            host_header = _inspected(head, tunnel, rec)
        else:
            assert head.target is not None
            authority, scheme, path = head.target.authority, head.target.scheme, head.target.path
            host_header = head.target.host_header()
            sni = None if authority.is_ip else authority.host
            key = upstream_key(scheme, authority.host, authority.port, sni)
            rec.protocol = "http" if scheme == "http" else "https"
            rec.url = head.target.url
        rec.dest_host, rec.dest_port = authority.host, authority.port
        if not await self._authorize(head, tunnel, rec, scheme, authority, path.decode("latin-1")):
            self._finish(rec, started)
            return head.keep_alive and head.framing is _NONE and not self.conn.closed

        if tunnel is not None and tunnel.failure is not None:
            fail = tunnel.failure
            await self._discard_body(head)
            self._fail(
                rec,
                fail.status,
                fail.message,
                keep_alive=head.keep_alive,
                head_only=head.method == b"HEAD",
                fix=tunnel.fix_commands,
            )
            if fail.status == 12229:
                rec.inspection = "deny"
                rec.inspection_reason = inspection.CLIENT_CERT_REASON
                rec.action = "Denied"
            self._finish(rec, started)
            return head.keep_alive

        up_head = writer.upstream_request_head(
            head, path=path, host=host_header, framing=head.framing
        )
        return await self._forward(head, up_head, key, authority, rec, started)

    async def _authorize(
        self,
        head: RequestHead,
        tunnel: Tunnel | None,
        rec: LogRecord,
        scheme: str,
        authority: Authority,
        path: str,
    ) -> bool:
        """Proxy authentication and the access rules; answers the denial itself."""
        rt = self.rt
        ip = self.conn.peer[0]
        extra: list[tuple[bytes, bytes]] = []
        if tunnel is None:
            # Inside an inspected tunnel the user is the one who authenticated the CONNECT.
            header = head.fields.get(b"proxy-authorization")
            # authenticate_cached is interpreted (auth.py is not compiled): skip the call
            # for the common request without credentials.
            res = NO_CREDENTIALS if header is None else rt.auth.authenticate_cached(ip, header)
            if res is None:  # an argon2 hash: tens of ms, off the event loop
                loop = asyncio.get_running_loop()
                res = await loop.run_in_executor(None, rt.auth.authenticate, ip, header)
            self.user, self.authenticated = res.user, res.authenticated
            if res.status:
                rec.user = (
                    (parse_proxy_authorization(header) or ("anonymous",))[0]
                    if header
                    else "anonymous"
                )
                if res.status == 429:
                    extra = [(b"Retry-After", b"%d" % res.retry_after)]
                else:
                    extra = [(b"Proxy-Authenticate", rt.auth.challenge)]
                return await self._deny(head, rec, res.status, res.reason, "", extra)
        denial = self._check_access(head, rec, scheme, authority, path)
        if denial is None:
            return True
        return await self._deny(head, rec, *denial)

    def _check_access(
        self, head: RequestHead, rec: LogRecord, scheme: str, authority: Authority, path: str
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """The access rules for a request whose user is known; fills the record's user,
        rule and networks.  None if allowed, else (status, reason, rule, extra fields)."""
        rt = self.rt
        rec.user = self.user or ANONYMOUS
        rec.authenticated = self.authenticated
        if rt.is_self(authority.host, authority.port):
            rec.rule = "Proxy self-protection"
            return 12202, SELF_REASON, "", []
        decision = rt.policy.decide(
            AccessFacts(
                self.conn.peer[0],
                self.user,
                self.authenticated,
                rec.method,
                scheme,
                authority.host,
                authority.port,
                path,
                head.connect is not None,
            )
        )
        rec.rule = decision.rule
        rec.source_network, rec.dest_network = decision.source_network, decision.dest_network
        if decision.allowed:
            return None
        extra = [(b"Proxy-Authenticate", rt.auth.challenge)] if decision.status == 12209 else []
        return decision.status, decision.reason, decision.rule, extra

    async def _deny(
        self,
        head: RequestHead,
        rec: LogRecord,
        status: int,
        reason: str,
        rule: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> bool:
        if head.connect is None:
            await self._discard_body(head)
        rec.action = "Denied"
        if rule:
            reason = f"{reason} (rule: {rule})"
        keep = head.keep_alive and head.connect is None and head.framing is _NONE
        self._fail(
            rec,
            status,
            reason,
            keep_alive=keep,
            head_only=head.method == b"HEAD",
            extra_headers=extra,
        )
        return False

    async def _discard_body(self, head: RequestHead) -> None:
        timeout = self.rt.config.timeouts.body_idle
        while True:
            ev = await self._next(timeout)
            if ev is None or isinstance(ev, MessageEnd | ParseFailed | TunnelData):
                return

    # -- forwarding ---------------------------------------------------------------------------
    async def _upstream(self, key: UpstreamKey, authority: Authority) -> Connection:
        """A new connection, verified when TLS (the caller tried the pool first)."""
        t = self.rt.config.timeouts
        up = await connect(authority, t.connect)
        if key.scheme == "https":
            try:
                await self._upstream_tls(up, key.sni or authority.host)
            except BaseException:
                up.abort()
                raise
            if client_cert_requested(up.tls):
                # The server asks for a certificate on a connection we meant to inspect.
                up.abort()
                if self.rt.config.inspection.on_client_certificate == "tunnel":
                    self.rt.learn(authority.host, authority.port, inspection.CLIENT_CERT_REASON)
                raise UpstreamError(12229, f"{authority} requested a client certificate")
        return up

    async def _upstream_tls(self, up: Connection, server_hostname: str) -> None:
        """TLS handshake with the server (detection hook on), then drop the hook."""
        ctx = self.rt.upstream_tls
        try:
            await up.start_tls(
                ctx.probe_context,
                server_side=False,
                server_hostname=server_hostname,
                timeout=self.rt.config.timeouts.connect,
            )
        except TimeoutError:
            raise UpstreamError(10060, f"TLS handshake with {server_hostname} timed out") from None
        except ssl.SSLError as exc:
            if client_cert_requested(up.tls):
                raise UpstreamError(
                    12229, f"{server_hostname} requires a client certificate"
                ) from None
            raise UpstreamError(classify_tls_error(exc), verification_detail(exc)) from None
        except ConnectionError as exc:
            raise UpstreamError(
                10054, f"{server_hostname} closed the TLS handshake: {exc}"
            ) from None

    async def _forward(
        self,
        head: RequestHead,
        up_head: bytes,
        key: UpstreamKey,
        authority: Authority,
        rec: LogRecord,
        started: float,
    ) -> bool:
        attempts = 2 if head.framing is _NONE else 1
        if head.framing is _NONE:
            # The end of a bodyless request follows its head; consume it once, here, so
            # a retry on a fresh connection does not wait for it again.
            events = self.events
            ev = events.popleft() if events else await self._next(self.rt.config.timeouts.body_idle)
            if not isinstance(ev, MessageEnd):
                raise _ClientGone
        for attempt in range(attempts):
            try:
                pooled = self.rt.pool.get(key)
                reused = pooled is not None
                up = pooled if pooled is not None else await self._upstream(key, authority)
            except UpstreamError as exc:
                if exc.status == 12229:
                    rec.inspection = "deny"
                    rec.inspection_reason = inspection.CLIENT_CERT_REASON
                    rec.action = "Denied"
                await self._finish_request_body(head)
                self._fail(rec, exc.status, exc.message, keep_alive=False)
                self._finish(rec, started)
                return False
            rec.dest_ip = up.peer[0]
            up.write(up_head)
            rec.bytes_received += len(up_head)
            result = await self._relay(
                head, up, key, rec, retry_ok=reused and attempt + 1 < attempts
            )
            if result is not None:
                self._finish(rec, started)
                return result
            # The pooled connection was closed by the server before it answered: retry.
        return False

    async def _finish_request_body(self, head: RequestHead) -> None:
        """Read (and drop) a request body the server will not get (its end for bodyless
        requests is consumed by ``_forward`` already)."""
        if head.framing is not _NONE:
            await self._discard_body(head)

    async def _send_body(self, up: Connection, chunked: bool, rec: LogRecord) -> None:
        timeout = self.rt.config.timeouts.body_idle
        while True:
            ev = await self._next(timeout)
            if ev is None:
                raise _ClientGone
            if isinstance(ev, BodyData):
                up.write(writer.chunk(ev.data) if chunked else ev.data)
                rec.bytes_received += len(ev.data)
                if up.writing_paused:
                    await up.drain()
            elif isinstance(ev, MessageEnd):
                if chunked:
                    up.write(writer.LAST_CHUNK)
                return
            elif isinstance(ev, ParseFailed):
                raise ev.error
            else:
                raise _ClientGone

    async def _relay(
        self, head: RequestHead, up: Connection, key: UpstreamKey, rec: LogRecord, *, retry_ok: bool
    ) -> bool | None:
        """Relay the response; True/False = keep the client; None = retry on a new connection."""
        t = self.rt.config.timeouts
        body_task: asyncio.Task[None] | None = None
        if head.framing is not _NONE:
            body_task = asyncio.create_task(self._send_body(up, head.framing is _CHUNKED, rec))
        rr = _response_reader(up, self.rt.limits, head.method)
        client_framing = _NONE
        keep_client = False
        sent_head = False
        got_bytes = False
        out: list[bytes] = []
        final: ResponseHead | None = None
        timeout = t.upstream_response
        try:
            while not rr.done:
                try:
                    data = await up.read(timeout)
                except TimeoutError:
                    if not sent_head:
                        self._no_answer(rec, timeout)
                        return False
                    raise _ClientGone from None
                if data:
                    got_bytes = True
                elif (
                    not got_bytes
                    and retry_ok
                    and body_task is None
                    and not client_cert_requested(up.tls)
                ):
                    up.abort()
                    return None
                for rev in rr.feed(data) if data else rr.feed_eof():
                    if isinstance(rev, ResponseHead):
                        if rev.status < 200:
                            if rev.status != 101 and head.version >= (1, 1):
                                out.append(writer.interim_response(rev))
                            continue
                        if client_cert_requested(up.tls):
                            self._late_client_cert(rec, up)
                            return False
                        final = rev
                        timeout = t.body_idle
                        client_head, client_framing, keep_client = self._final_head(rev, head, rec)
                        out.append(client_head)
                        sent_head = True
                    elif isinstance(rev, BodyData):
                        rec.bytes_sent += len(rev.data)
                        out.append(
                            writer.chunk(rev.data) if client_framing is _CHUNKED else rev.data
                        )
                    elif isinstance(rev, MessageEnd):
                        if client_framing is _CHUNKED:
                            out.append(writer.LAST_CHUNK)
                    elif isinstance(rev, TunnelData):
                        if final is not None and final.status == 101 and head.upgrade:
                            self._send(b"".join(out))
                            out.clear()
                            up.unread(rev.data)
                            await self._websocket(up, rec)
                            return False
                    elif isinstance(rev, ParseFailed):
                        if not sent_head and client_cert_requested(up.tls):
                            self._late_client_cert(rec, up)
                            return False
                        if not sent_head:
                            self._fail(rec, rev.error.status, rev.error.message)
                            return False
                        raise _ClientGone
                if out:
                    data_out = out[0] if len(out) == 1 else b"".join(out)
                    out.clear()
                    self._send(data_out)
                    if self.conn.writing_paused:
                        await self._flush()
            if body_task is not None:
                if not body_task.done():
                    # The server answered before reading the whole body: the client's
                    # remaining bytes cannot be resynchronised.
                    keep_client = False
                    body_task.cancel()
                    up.abort()
                    return False
                await body_task
            self._put_back(final, rr, up, key)
            return keep_client
        except BaseException:
            up.abort()
            if body_task is not None and not body_task.done():
                body_task.cancel()
            raise

    def _final_head(
        self, rev: ResponseHead, head: RequestHead, rec: LogRecord
    ) -> tuple[bytes, Framing, bool]:
        """The client's head for a final response (framing chosen for the client's HTTP
        version), the client's framing, whether the client connection stays open; the
        record gets the status, object source and MIME type."""
        upgrade = rev.status == 101
        if rev.framing is _CHUNKED or rev.framing is _CLOSE:
            chunked_ok = head.version >= (1, 1)
            client_framing = _CHUNKED if chunked_ok else _CLOSE
        else:
            client_framing = rev.framing
        keep_client = (
            head.keep_alive
            and client_framing is not _CLOSE
            and not self.rt.draining
            and not upgrade
        )
        client_head = writer.client_response_head(
            rev,
            framing=client_framing,
            keep_alive=keep_client,
            client_version=head.version,
            upgrade=upgrade and head.upgrade is not None,
        )
        rec.status = rev.status
        rec.object_source = OBJECT_SOURCE_INTERNET
        ctype = rev.fields.get(b"content-type")
        if ctype:
            rec.mime_type = ctype.split(b";")[0].strip().decode("latin-1")
        return client_head, client_framing, keep_client

    def _put_back(
        self, final: ResponseHead | None, rr: ResponseReader, up: Connection, key: UpstreamKey
    ) -> None:
        """Pool the upstream connection if the response left it reusable, else close it.
        A pooled connection keeps the reader if its parser can read the next response."""
        if final is not None and final.keep_alive and not rr.extra and not up.at_eof:
            up.response_reader = rr if rr.reusable else None
            self.rt.pool.put(key, up)
        else:
            rr.release()
            up.close()

    def _no_answer(self, rec: LogRecord, timeout: float) -> None:
        """504: the server sent no response head within ``timeout``."""
        self._fail(rec, 504, f"{rec.dest_host} did not answer within {timeout:g} s")

    def _late_client_cert(self, rec: LogRecord, up: Connection) -> None:
        """The server asked for a client certificate after the handshake (TLS 1.2
        renegotiation or TLS 1.3 post-handshake auth): this request cannot be served
        inspected.  In tunnel mode the server is learned, so the next connection tunnels."""
        up.abort()
        reason = (
            f"{inspection.CLIENT_CERT_REASON} after the handshake "
            "(renegotiation or post-handshake auth)"
        )
        if self.rt.config.inspection.on_client_certificate == "tunnel":
            self.rt.learn(rec.dest_host, rec.dest_port, inspection.CLIENT_CERT_REASON)
            detail = (
                f"{reason}; tlsgate learned {rec.dest_host}:{rec.dest_port}: "
                "retry and the connection is tunnelled"
            )
        else:
            detail = reason
        rec.inspection, rec.inspection_reason, rec.action = "deny", reason, "Denied"
        self._fail(rec, 12229, detail, fix=inspection.fix_commands(rec.client_ip, rec.dest_host))

    async def _websocket(self, up: Connection, rec: LogRecord) -> None:
        """After a 101: the connection is the application's; splice both ways."""
        await self.conn.splice(up)
        rec.bytes_sent += up.bytes_in
        rec.bytes_received += up.bytes_out

    # -- CONNECT ----------------------------------------------------------------------------
    async def _connect(
        self, head: RequestHead, authority: Authority, rec: LogRecord, started: float
    ) -> None:
        rt = self.rt
        t = rt.config.timeouts
        settings = rt.config.inspection
        rec.method = "CONNECT"
        rec.url = str(authority)
        rec.dest_host, rec.dest_port = authority.host, authority.port
        rec.protocol = "SSL-tunnel"
        # The bytes after the CONNECT head already belong to the tunnel.
        for ev in self.events:
            if isinstance(ev, TunnelData):
                self.conn.unread(ev.data)
        self.events.clear()
        facts = inspection.ConnectFacts(self.conn.peer[0], authority.host, authority.port)
        decision = inspection.decide_connect(
            settings,
            facts,
            inspection_enabled=rt.inspection_enabled,
            learned=rt.learned.get(authority.host, authority.port),
        )
        if isinstance(decision, inspection.Tunnel):
            if decision.reason.startswith("learned"):
                rt.learn(authority.host, authority.port, inspection.CLIENT_CERT_REASON)
            await self._tunnel(authority, rec, started, decision.reason, hello=b"")
            return

        known = rt.is_known_inspectable(authority.host, authority.port)
        up: Connection | None = None
        if not known:
            try:
                up = await connect(authority, t.connect)
            except UpstreamError as exc:
                self._fail(rec, exc.status, exc.message)
                self._finish(rec, started)
                return
        self._send(writer.connect_established())
        try:
            hello = await self._read_client_hello()
        except NotTLS:
            # Not TLS (e.g. plain HTTP or another protocol over CONNECT): nothing to inspect.
            if up is not None:
                up.abort()
            await self._tunnel(authority, rec, started, "the client did not start TLS", hello=b"")
            return
        except (MalformedClientHello, ProtocolError, TimeoutError, _ClientGone) as exc:
            if up is not None:
                up.abort()
            rec.protocol = "https-inspect"
            rec.status, rec.action = 12903, "Failed"
            rec.error_info = f"no valid TLS ClientHello from the client: {exc}"
            self._finish(rec, started)
            return

        sni = hello.sni
        server_name = sni or authority.host
        key = upstream_key(
            "https",
            authority.host,
            authority.port,
            sni or (None if authority.is_ip else authority.host),
        )
        tun = Tunnel(authority, sni, key)
        if up is None and not rt.pool.has_idle(key):
            try:
                up = await connect(authority, t.connect)
            except UpstreamError as exc:
                tun.failure = exc
        if up is not None:
            probe = await self._probe(up, server_name, tun)
            if probe is not None:
                after = inspection.decide_after_probe(settings, facts, probe)
                if isinstance(after, inspection.Tunnel):
                    up.abort()
                    if after.learn:
                        rt.learn(authority.host, authority.port, after.reason)
                    rec.inspection_reason = after.reason
                    await self._tunnel(
                        authority, rec, started, after.reason, hello=hello.raw + hello.rest
                    )
                    return
                if isinstance(after, inspection.Deny):
                    up.abort()
                    up = None
                    tun.failure = UpstreamError(after.status, after.reason)
                    tun.fix_commands = inspection.fix_commands(self.conn.peer[0], authority.host)
        await self._inspect(authority, hello, tun, up, rec, started)

    async def _read_client_hello(self) -> ClientHello:
        chr_ = ClientHelloReader()
        timeout = self.rt.config.timeouts.client_header
        async with asyncio.timeout(timeout):
            while True:
                data = await self.conn.read()
                if not data:
                    raise _ClientGone
                hello = chr_.feed(data)
                if hello is not None:
                    return hello

    async def _probe(
        self, up: Connection, server_name: str, tun: Tunnel
    ) -> inspection.ProbeResult | None:
        """Handshake with the server first; None when the connection failed outright."""
        try:
            await self._upstream_tls(up, server_name)
        except UpstreamError as exc:
            requested = client_cert_requested(up.tls)
            up.abort()
            if exc.status == 12229 or requested:
                return inspection.ProbeResult(client_cert_requested=True, sni=tun.sni)
            tun.failure = exc
            return inspection.ProbeResult(
                client_cert_requested=False, certificate_status=exc.status, sni=tun.sni
            )
        tun.tls_version = tls_version(up.tls)
        tun.cert_subject = _subject(up.tls)
        return inspection.ProbeResult(
            client_cert_requested=client_cert_requested(up.tls),
            certificate_names=_san_names(up.tls),
            sni=tun.sni,
        )

    async def _inspect(
        self,
        authority: Authority,
        hello: ClientHello,
        tun: Tunnel,
        up: Connection | None,
        rec: LogRecord,
        started: float,
    ) -> None:
        rt = self.rt
        leaf_name = tun.sni or authority.host
        try:
            ctx = rt.minter.context_for(leaf_name)
        except ValueError as exc:
            if up is not None:
                up.abort()
            rec.protocol = "https-inspect"
            self._finish_failed(rec, started, 12903, f"cannot issue a certificate: {exc}")
            return
        try:
            await self.conn.start_tls(
                ctx,
                server_side=True,
                initial=hello.raw + hello.rest,
                timeout=rt.config.timeouts.client_header,
            )
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            if up is not None:
                up.abort()
            rec.protocol = "https-inspect"
            self._finish_failed(
                rec,
                started,
                12903,
                f"TLS handshake with the client failed ({exc}); does the client trust "
                "tlsgate's CA? ('tlsgate ca export')",
            )
            return
        if up is not None and tun.failure is None:
            rt.pool.put(tun.key, up)
            rt.mark_inspectable(authority.host, authority.port)
        elif up is not None:
            up.abort()
        self.reader = RequestReader(rt.limits, in_tunnel=True)
        self.events.clear()
        await self._serve_requests(tun)

    def _finish_failed(self, rec: LogRecord, started: float, status: int, why: str) -> None:
        rec.status, rec.action, rec.error_info = status, "Failed", why
        self._finish(rec, started)

    async def _tunnel(
        self, authority: Authority, rec: LogRecord, started: float, reason: str, *, hello: bytes
    ) -> None:
        """A plain byte tunnel.  ``hello`` is the client's ClientHello when already read
        (and 200 already sent): it goes to a fresh server connection unchanged."""
        rec.protocol = "SSL-tunnel"
        rec.inspection = "tunnel"
        rec.inspection_reason = reason
        try:
            up = await connect(authority, self.rt.config.timeouts.connect)
        except UpstreamError as exc:
            if hello:
                self._finish_failed(rec, started, exc.status, exc.message)
            else:
                self._fail(rec, exc.status, exc.message)
                self._finish(rec, started)
            return
        rec.dest_ip = up.peer[0]
        if not hello:
            self._send(writer.connect_established())
        else:
            up.write(hello)
        rec.status = 200
        # The session ends here; the tunnel lives on in the two connections' callbacks
        # and is logged when both sides have closed.
        self.handed_off = True
        _hand_off_tunnel(self.rt, self.conn, up, rec, started)


class _FastResponse:
    """A fast-path request's response, read in the server connection's callbacks.

    Served here only when the whole final response (a length or no body) comes in one
    delivery; anything else goes to the session's task as a :class:`_Resume` before a
    byte reached the client.  A server that closes before answering (an idle pooled
    connection it had given up) gets the request back to the task, which retries it as
    it retries its own; a server that does not answer in time gets a 504, as in
    :meth:`Session._relay`.
    """

    __slots__ = ("done", "head", "key", "reader", "rec", "session", "started", "up")

    def __init__(
        self,
        session: Session,
        head: RequestHead,
        up: Connection,
        key: UpstreamKey,
        rec: LogRecord,
        started: float,
    ) -> None:
        self.session, self.head, self.up, self.key = session, head, up, key
        self.rec, self.started = rec, started
        self.reader = _response_reader(up, session.rt.limits, head.method)
        self.done = False
        up.on_data = self.data
        up.watch_end(session.rt.upstream_response, self.ended)

    def _stop(self) -> None:
        self.done = True
        self.up.on_data = None
        self.up.unwatch()

    def data(self, data: bytes) -> bool:
        up, rr, session = self.up, self.reader, self.session
        self._stop()  # one delivery decides: served here, or handed to the task
        events = rr.feed(data)
        rev = events[0] if events else None
        if (
            not rr.done
            or rr.extra
            or not isinstance(rev, ResponseHead)
            or rev.status < 200
            or rev.status == 101
            or rev.framing is _CHUNKED
            or rev.framing is _CLOSE
            or events[-1] is not _END
            or client_cert_requested(up.tls)
        ):
            session._to_task([_Resume(self.head, up, self.key, self.rec, self.started)])
            return False  # the bytes stay on ``up`` for _relay
        rec = self.rec
        client_head, _, keep_client = session._final_head(rev, self.head, rec)
        out = [client_head]
        for ev in events[1:-1]:
            assert isinstance(ev, BodyData)
            out.append(ev.data)
            rec.bytes_sent += len(ev.data)
        session._put_back(rev, rr, up, self.key)
        if not session.conn.closed:
            session.conn.write(b"".join(out))
        _submit(session.rt, rec, self.started)
        session.rt.fast_served += 1
        session._fast_done(keep_client)
        return True

    def ended(self, exc: BaseException | None) -> None:
        """The server connection ended, or did not answer in time, before a response."""
        if self.done:
            return
        self._stop()
        session, up, rec = self.session, self.up, self.rec
        if isinstance(exc, TimeoutError):
            up.abort()
            session._no_answer(rec, session.rt.config.timeouts.upstream_response)
            _submit(session.rt, rec, self.started)
            session._fast_done(False)
        elif client_cert_requested(up.tls):  # _relay tells the client why
            session._to_task([_Resume(self.head, up, self.key, rec, self.started)])
        else:
            up.abort()
            session._to_task([self.head, _END])


def _response_reader(up: Connection, limits: Limits, method: bytes) -> ResponseReader:
    """The reader for the next response on ``up``: the one the last response left there
    if its parser can go on (:attr:`ResponseReader.reusable`), else a new one.  The
    request holds it until :meth:`Session._put_back` gives it back; a request handed
    from the fast path to the task leaves none, so the task starts afresh."""
    rr = up.response_reader
    up.response_reader = None
    if isinstance(rr, ResponseReader) and rr.reusable:
        rr.reset(method)
        return rr
    return ResponseReader(limits, method)


def _hand_off_tunnel(
    rt: Runtime, client: Connection, up: Connection, rec: LogRecord, started: float
) -> None:
    """Splice ``client`` and ``up``; log ``rec`` when both have closed.

    A module function, so the idle tunnel keeps only its two connections and its record
    alive, not the session (its HTTP parser and buffers): measured 10.7 -> 7.9 KiB per
    idle tunnel.
    """

    def closed(_: asyncio.Future[None]) -> None:
        rec.bytes_received += up.bytes_out
        rec.bytes_sent += up.bytes_in
        _submit(rt, rec, started)
        rt.tunnels.discard(client)

    rt.tunnels.add(client)
    client.start_splice(up).add_done_callback(closed)


def _submit(rt: Runtime, rec: LogRecord, started: float) -> None:
    rec.time_taken_ms = int((monotonic() - started) * 1000)
    rt.log.submit(rec)
