"""One TCP connection as an asyncio Protocol, with TLS through our own MemoryBIO pump.

asyncio's SSL transport keeps two 256 KiB buffers per connection (~570 KiB idle) and
uvloop's SSL transport lost data when servers closed (``REFERENCE.md``), so TLS runs here
over a plain TCP transport (asyncio's or uvloop's, see ``tlsgate.eventloop``):
ciphertext goes into an ``ssl.MemoryBIO``, plaintext comes out of the ``SSLObject``.
The same object can be switched to TLS after it has carried plaintext (CONNECT, then the
client's ClientHello) and spliced to another connection for a tunnel.

Reads are awaitable (``await conn.read()``); writes are immediate with ``drain()`` for
backpressure.  Reading pauses when unconsumed plaintext exceeds ``HIGH_WATER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, cast

HIGH_WATER = 256 * 1024
_NEVER = float("inf")
TLS_READ = 256 * 1024


class Transport(Protocol):
    """What a connection uses of its TCP transport.  A Protocol rather than
    ``asyncio.Transport``: compiled code checks concrete classes at run time, and an
    event loop in C (uvloop) has transports of its own classes."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_buf_size",
        "_deadline",
        "_drain_waiter",
        "_end_watch",
        "_eof",
        "_handshake_waiter",
        "_held",
        "_incoming",
        "_kicked",
        "_loop",
        "_outgoing",
        "_read_paused",
        "_read_waiter",
        "_record_layer",
        "_splice_done",
        "_tls",
        "_write_paused",
        "bytes_in",
        "bytes_out",
        "closed",
        "error",
        "on_data",
        "peer",
        "response_reader",
        "splice_peer",
        "transport",
    )

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: Transport | None = None
        self._buf: list[bytes] = []  # a list: 56 bytes empty, a deque ~620
        self._buf_size = 0
        self._eof = False
        self._read_paused = False
        self._write_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._end_watch: Callable[[BaseException | None], None] | None = None
        self._deadline: float | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._tls: ssl.SSLObject | None = None
        self._record_layer: Any = None
        """What reads and writes the TLS records: the C object under ``_tls`` (see
        :func:`_record_layer`)."""
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._handshake_waiter: asyncio.Future[None] | None = None
        self.splice_peer: Connection | None = None
        self._splice_done: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.bytes_in = 0
        """Bytes received from the peer on the wire (ciphertext under TLS)."""
        self.bytes_out = 0
        self.on_data: Callable[[bytes], bool] | None = None
        """One-shot hook for the next plaintext delivered when nothing is buffered: True
        if it took the bytes (the session's fast path), False to buffer them as usual."""
        self._held = False
        self._kicked = False
        self.response_reader: object = None
        """Kept here between requests by whoever reads responses on this connection
        (the proxy's HTTP/1 response reader, so that a pooled connection keeps its
        parser); None when there is none."""

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = cast(Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._tls is not None:
            self._tls_received(data)
        else:
            self._deliver(data)

    def eof_received(self) -> bool:
        if self.splice_peer is not None:
            peer = self.splice_peer
            if peer.transport is not None and peer.transport.can_write_eof():
                peer.transport.write_eof()
            self._eof = True
            self._maybe_end_splice()
            return True
        self._eof = True
        self._wake_reader()
        return True  # keep the transport: we may still be writing to this peer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        _Deadlines.forget(self)
        self._eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiter = None
        hs = self._handshake_waiter
        if hs is not None and not hs.done():
            hs.set_exception(
                self.error or ConnectionResetError("connection closed during handshake")
            )
        if self.splice_peer is not None:
            self.splice_peer.close()
            self._maybe_end_splice()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.splice_peer is not None and self.splice_peer.transport is not None:
            self.splice_peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        peer = self.splice_peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.resume_reading()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._drain_waiter = None

    # -- reading ----------------------------------------------------------------------
    def _deliver(self, data: bytes) -> None:
        if self.splice_peer is not None:
            self.splice_peer.write(data)
            return
        hook = self.on_data
        if hook is not None:
            self.on_data = None
            if not self._buf and hook(data):
                return
        self._buf.append(data)
        self._buf_size += len(data)
        if not self._held:
            self._wake_reader()
        if self._buf_size > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._read_waiter = None
        if self._eof and self._end_watch is not None:
            self._end(None)

    async def read(self, timeout: float | None = None) -> bytes:
        """All plaintext received so far (waits for some); ``b""`` at end of stream.

        ``timeout``: raise TimeoutError when nothing arrives for that long.  Deadlines are
        checked by one coarse sweeper (every 0.25 s) instead of a timer per read: the
        keep-alive path reads twice per request and a timer each time cost ~10 us.  The
        deadline is a slot of the connection, so a read adds nothing to any collection.
        """
        while not self._buf:
            if self._eof:
                return b""
            if self._kicked:
                self._kicked = False
                return b""
            waiter = self._read_waiter = self._loop.create_future()
            if timeout is None:
                if self._deadline is not None:
                    self._deadline = _NEVER  # a stale deadline must not fail this read
                await waiter
                continue
            self._arm(timeout)
            await waiter
        self._kicked = False
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._buf_size = 0
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    # -- the fast path's hand-overs (see Session._fast_request) -------------------------
    def kick(self) -> None:
        """End a waiting :meth:`read` with ``b""`` although the stream goes on: whoever
        took bytes through :attr:`on_data` left work for the reading task."""
        self._kicked = True
        self._wake_reader()

    def hold(self) -> None:
        """Keep what arrives buffered without waking a waiting read, and suspend its
        deadline (a request is being served outside the reading task)."""
        self._held = True
        if self._deadline is not None:
            self._deadline = _NEVER

    def release(self, timeout: float) -> bool:
        """Undo :meth:`hold`; a waiting read gets ``timeout`` from now.  True if bytes
        arrived meanwhile (the waiting read is woken for them)."""
        self._held = False
        if self._deadline is not None:
            self._deadline = self._loop.time() + timeout
        if self._buf or self._eof:
            self._wake_reader()
            return True
        return False

    def watch_end(self, timeout: float, callback: Callable[[BaseException | None], None]) -> None:
        """Have ``callback(None)`` called at end of stream, or ``callback(TimeoutError())``
        after ``timeout`` (checked as a read's deadline), once, from the event loop; for
        bytes taken by :attr:`on_data` with no task reading.  :meth:`unwatch` forgets it.

        A callback, not a future: the fast path watches once per request, and a future
        with a done-callback cost ~2,000 instructions more (BENCHMARKS.md)."""
        self._end_watch = callback
        if self._eof:
            self._end(None)
        self._arm(timeout)

    def _end(self, exc: BaseException | None) -> None:
        """Fire the :meth:`watch_end` callback (soon, as a future's callback would run)."""
        callback = self._end_watch
        if callback is not None:
            self._end_watch = None
            self._loop.call_soon(callback, exc)

    def _arm(self, timeout: float) -> None:
        """The waiting read's deadline: ``timeout`` from now (see :class:`_Deadlines`)."""
        if self._deadline is None:
            _Deadlines.watch(self)
        self._deadline = self._loop.time() + timeout

    def unwatch(self) -> None:
        self._end_watch = None

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (e.g. what followed a message)."""
        if data:
            self._buf.insert(0, data)
            self._buf_size += len(data)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def take_buffered(self) -> bytes:
        data = b"".join(self._buf)
        self._buf.clear()
        self._buf_size = 0
        return data

    # -- writing ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        tls = self._record_layer
        if tls is not None:
            view: bytes | memoryview = data  # a memoryview only if OpenSSL takes less
            while view:
                try:
                    n = tls.write(view)
                except ssl.SSLError as exc:
                    self.error = exc
                    transport.abort()
                    return
                if n == len(view):
                    break
                view = memoryview(view)[n:]
            data = self._outgoing.read() if self._outgoing is not None else b""
        self.bytes_out += len(data)
        transport.write(data)

    @property
    def writing_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter

    # -- TLS --------------------------------------------------------------------------
    @property
    def tls(self) -> ssl.SSLObject | None:
        return self._tls

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        initial: bytes = b"",
        timeout: float,
    ) -> ssl.SSLObject:
        """Switch to TLS and complete the handshake.

        ``initial`` is ciphertext already read from the peer (the ClientHello that was
        inspected before deciding).  Raises ``ssl.SSLError``, ``ConnectionError`` or
        ``TimeoutError``.
        """
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._record_layer = _record_layer(self._tls)
        self._handshake_waiter = self._loop.create_future()
        pending = initial + self.take_buffered()
        if pending:
            self._incoming.write(pending)
        self._do_handshake()
        try:
            async with asyncio.timeout(timeout):
                await self._handshake_waiter
        finally:
            self._handshake_waiter = None
        return self._tls

    def _flush_tls(self) -> None:
        out = self._outgoing
        transport = self.transport
        if out is not None and out.pending and transport is not None and not transport.is_closing():
            data = out.read()
            self.bytes_out += len(data)
            transport.write(data)

    def _do_handshake(self) -> None:
        tls = self._tls
        waiter = self._handshake_waiter
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            if self._eof and waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionResetError("peer closed during the TLS handshake"))
            return
        except (ssl.SSLError, ValueError) as exc:
            self._flush_tls()  # the alert that tells the peer why
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            return
        self._flush_tls()
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._tls_read_all()

    def _tls_received(self, data: bytes) -> None:
        assert self._incoming is not None
        self._incoming.write(data)
        waiter = self._handshake_waiter
        if waiter is not None and not waiter.done():
            self._do_handshake()
            return
        self._tls_read_all()

    def _tls_read_all(self) -> None:
        tls = self._record_layer
        assert tls is not None
        incoming = self._incoming
        assert incoming is not None
        chunks = []
        while True:
            try:
                chunk = tls.read(TLS_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._eof = True
                break
            except ssl.SSLError as exc:
                self.error = exc
                self._eof = True
                if self.transport is not None:
                    self.transport.abort()
                break
            if not chunk:
                self._eof = True
                break
            chunks.append(chunk)
            if not incoming.pending and not tls.pending():
                # All ciphertext consumed: another read would only raise WantRead
                # (an exception per delivery, ~1 us).
                break
        self._flush_tls()  # key updates, session tickets, renegotiation answers
        if chunks:
            self._deliver(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._eof:
            self._wake_reader()

    # -- closing ----------------------------------------------------------------------
    def close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._tls is not None and self._handshake_waiter is None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._tls.unwrap()
            self._flush_tls()
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- splicing (tunnels) -------------------------------------------------------------
    def _maybe_end_splice(self) -> None:
        peer = self.splice_peer
        done = self._splice_done
        if peer is None or done is None or done.done():
            return
        if (self.closed or self._eof) and (peer.closed or peer._eof):
            self.close()
            peer.close()
        if self.closed and peer.closed:
            done.set_result(None)

    def start_splice(self, other: Connection) -> asyncio.Future[None]:
        """Copy bytes both ways, in the protocol callbacks alone, until both sides are
        closed (a tunnel); the future completes then.  No task waits on an idle tunnel,
        so it costs only its two connections (measured: ~12.6 KiB each before).

        Anything already buffered on either side is forwarded first.
        """
        done: asyncio.Future[None] = self._loop.create_future()
        self._splice_done = done
        other._splice_done = done
        self.splice_peer, other.splice_peer = other, self
        for a, b in ((self, other), (other, self)):
            pending = a.take_buffered()
            if pending:
                b.write(pending)
            if a._read_paused and a.transport is not None and not a.closed:
                a._read_paused = False
                a.transport.resume_reading()
        for a, b in ((self, other), (other, self)):
            if a._eof and b.transport is not None and not b.closed and b.transport.can_write_eof():
                b.transport.write_eof()
        self._maybe_end_splice()
        other._maybe_end_splice()
        if self.closed or other.closed:
            self.close()
            other.close()

        def unlink(_: asyncio.Future[None]) -> None:
            self.splice_peer = other.splice_peer = None

        done.add_done_callback(unlink)
        return done

    async def splice(self, other: Connection) -> None:
        """:meth:`start_splice` and wait until the tunnel is closed."""
        await self.start_splice(other)


def _record_layer(tls: ssl.SSLObject) -> Any:
    """The ``_ssl`` object an ``SSLObject`` wraps, whose ``read``, ``write`` and
    ``pending`` the wrapper's only forward: each wrapper is a frame of interpreted
    Python (ssl.py), and a proxied request calls six (``benchmarks.profile``: ~8 us of
    interpreted code per request around the record layer).  The wrapper itself where a
    Python has no such attribute (private to ssl.py)."""
    return getattr(tls, "_sslobj", None) or tls


class _Deadlines:
    """Read deadlines, checked by one task per event loop every ``INTERVAL`` seconds.

    A connection joins ``watched`` at its first timed read and leaves when it is lost;
    a read only stores its deadline in the connection.  The sweeper fails a read whose
    deadline has passed (a read that finished leaves a stale deadline, ignored because
    no read is waiting).
    """

    watched: ClassVar[set[Connection]] = set()
    sweeper: ClassVar[asyncio.Task[None] | None] = None
    INTERVAL: ClassVar[float] = 0.25

    @classmethod
    def watch(cls, conn: Connection) -> None:
        sweeper = cls.sweeper
        if sweeper is None or sweeper.done() or sweeper.get_loop() is not conn._loop:
            # A new event loop (tests run many): connections of a closed one go.
            cls.watched = {c for c in cls.watched if c._loop is conn._loop}
            cls.sweeper = conn._loop.create_task(cls._sweep(conn._loop), name="tlsgate-deadlines")
        cls.watched.add(conn)

    @classmethod
    def forget(cls, conn: Connection) -> None:
        cls.watched.discard(conn)

    @classmethod
    async def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        while cls.watched:
            await asyncio.sleep(cls.INTERVAL)
            now = loop.time()
            for conn in list(cls.watched):
                if conn._loop is not loop:
                    continue
                waiter = conn._read_waiter
                deadline = conn._deadline
                if deadline is None or deadline > now:
                    continue
                if waiter is not None and not waiter.done():
                    waiter.set_exception(TimeoutError())
                if conn._end_watch is not None:
                    conn._end(TimeoutError())


async def open_connection(host: str, port: int) -> Connection:
    """TCP connect; raises ``OSError`` subclasses (refused, unreachable, DNS failure)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol
