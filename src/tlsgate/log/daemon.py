"""The log daemon: a child process that stores a member's Web Proxy log in SQLite.

Why a process, as Squid's ``log_file_daemon``: in the member, the writer thread took
the GIL back from the event loop once per inserted row, and SQLite's index work ran on
the same interpreter; measured, logging cost ~40% of keep-alive throughput.  Now the
member turns each batch into a :data:`~tlsgate.log.record.WireBatch` (``to_wire``:
each record's values as one compiled tuple, the times in microseconds beside), sends it
down a pipe as one ``marshal`` frame and goes on.

The daemon stores each frame whole in the log's spool at once (one row per batch), and
indexes the spool (builds the rows and their index keys, inserts them) when the member
is not busy: when no frame has come for :data:`IDLE` seconds (a member flushes at least
once a second, and every ~0.2 s when it is saturated), or at once while more than
:data:`BOUND` records wait (so the lag and the spool stay bounded; a proxy busy for
longer than that pays for the indexes as it goes).  Queries index the spool first
(:meth:`~tlsgate.log.database.SqliteLogSink.execute_select`), so they never miss a
record.  Measured (BENCHMARKS.md): the indexes cost ~10 us of CPU per record, which a
saturated 2-core box took out of the proxy, curl and nginx.

The member side runs on the event loop (an :class:`~tlsgate.log.sinks.AsyncLogSink`):
the batch is converted in slices with the loop free in between, and the frame goes out
through a non-blocking pipe transport.  Done in a worker thread instead, the thread and
the loop handed the GIL back and forth: keep-alive with the log on measured 7,527-7,789
req/s and a p99 of 3.2-3.6 ms that way, against 7,920-7,948 req/s and 3.0 ms on the loop
(BENCHMARKS.md).

Durability: a write returns once its frame is in the pipe (the transport's buffer is
empty), and a frame in the pipe is stored even if the member then dies (the daemon
drains the pipe before it exits); a graceful stop waits for the daemon.  A stored frame
is indexed exactly once: the move from the spool is one transaction.  If the daemon
dies, it is restarted with the next batch; the frame it was storing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import marshal
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from tlsgate.errors import StoreError
from tlsgate.log.database import SqliteLogSink
from tlsgate.log.record import LogRecord, WireBatch, to_wire

_FRAME = struct.Struct("!II")
"""A frame's head: the payload's length and its number of records."""
IDLE: Final = 0.5
"""Seconds without a frame after which the daemon indexes the spool."""
BOUND: Final = 100_000
"""Records in the spool beyond which the daemon indexes whether the member is busy or
not (~10 s of a saturated member; ~1 s of CPU to index)."""
CHUNK: Final = 5_000
"""Records indexed per transaction (~50 ms), so frames keep being read in between."""
_SLICE = 500
"""Records converted between two yields to the loop (~1 ms)."""
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class _Pipe(asyncio.Protocol):
    """Flow control of the pipe to the daemon: ``drain`` waits until every byte written
    is in the pipe (write buffer limits are 0, so any buffered byte pauses)."""

    def __init__(self) -> None:
        self.lost: BaseException | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or BrokenPipeError("the log daemon closed its input")
        self._wake(self.lost)

    def _wake(self, exc: BaseException | None) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def drain(self) -> None:
        if self.lost is not None:
            raise self.lost
        if self._paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class LogDaemonSink:
    """An AsyncLogSink whose inserts run in ``python -m tlsgate.log.daemon PATH``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = "sqlite"
        self.location = f"{self.path} (log daemon)"
        self._rows = SqliteLogSink(self.path)  # row conversion, retention, schema
        self._proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._pipe: _Pipe | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        self._rows.open()  # creates the schema here, so errors surface in the member
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlsgate.log.daemon", str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        with contextlib.suppress(OSError):  # fewer wake-ups per batch; 64 KiB otherwise
            fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
        return proc

    def start(self) -> None:
        """Start the daemon now (a member does at start-up, so a broken log store shows
        at once and the daemon's memory is not counted against the first requests)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()

    async def _connected(self) -> tuple[asyncio.WriteTransport, _Pipe]:
        """The pipe to a running daemon, starting one (off the loop) if needed."""
        transport, pipe = self._transport, self._pipe
        proc = self._proc
        alive = proc is not None and proc.poll() is None
        if transport is not None and pipe is not None and pipe.lost is None and alive:
            return transport, pipe
        if transport is not None and not transport.is_closing():
            transport.abort()
        self._transport = self._pipe = None
        if proc is None or not alive:
            proc = self._proc = await asyncio.to_thread(self._start)
        assert proc.stdin is not None
        loop = asyncio.get_running_loop()
        transport, pipe = await loop.connect_write_pipe(_Pipe, proc.stdin)
        transport.set_write_buffer_limits(high=0)
        self._transport, self._pipe = transport, pipe
        return transport, pipe

    async def write(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        values: WireBatch = ([], [])
        for i in range(0, len(records), _SLICE):
            if i:
                await asyncio.sleep(0)  # let requests run between slices
            part = to_wire(records[i : i + _SLICE])
            values[0].extend(part[0])
            values[1].extend(part[1])
        payload = marshal.dumps(values)
        try:
            transport, pipe = await self._connected()
            transport.write(_FRAME.pack(len(payload), len(records)) + payload)
            await pipe.drain()
        except OSError as exc:
            self._proc = None
            raise StoreError(
                f"log daemon for {self.path} stopped: {exc}",
                fix="see the member's log; it is restarted with the next batch",
            ) from None

    def prune(
        self, *, max_age: timedelta | None, max_rows: int | None, now: datetime | None = None
    ) -> int:
        return self._rows.prune(max_age=max_age, max_rows=max_rows, now=now)

    async def close(self) -> None:
        """Close the pipe (the daemon stores what it holds, then exits) and wait for it."""
        transport, proc = self._transport, self._proc
        self._transport = self._pipe = None
        self._proc = None
        if transport is not None:
            transport.close()  # written bytes are all in the pipe: drain waited for them
        elif proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.to_thread(self._rows.close)

    def __repr__(self) -> str:
        return f"LogDaemonSink({str(self.path)!r})"


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None if the input ends first."""
    parts: list[bytes] = []
    while n:
        data = os.read(fd, min(n, _PIPE_SIZE))
        if not data:
            return None
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class _Backoff:
    """Waits after failures: 0.1 s, doubling up to 5 s; back to 0.1 s after a success."""

    def __init__(self) -> None:
        self.delay = 0.1

    def next(self) -> float:
        """The wait after this failure (the next one waits twice as long)."""
        delay, self.delay = self.delay, min(self.delay * 2, 5.0)
        return delay

    def reset(self) -> None:
        self.delay = 0.1


_R = TypeVar("_R")


def _retrying(call: Callable[..., _R], *args: Any) -> _R:
    """``call(*args)`` until it works: the member's pipe fills meanwhile; it buffers, then
    drops and counts."""
    backoff = _Backoff()
    while True:
        try:
            return call(*args)
        except StoreError as exc:
            print(f"tlsgate log daemon: {exc.one_line()}; retrying", file=sys.stderr)
            time.sleep(backoff.next())


class _Indexer:
    """Indexes the spool a chunk at a time.  After a failure it waits before the next
    try (:class:`_Backoff`) while frames go on being spooled."""

    def __init__(self, sink: SqliteLogSink, chunk: int) -> None:
        self.sink = sink
        self.chunk = chunk
        self.backoff = _Backoff()
        self.next_try = 0.0

    def pause(self) -> float:
        """Seconds until the next try is due (0 when it is)."""
        return max(0.0, self.next_try - time.monotonic())

    def run(self) -> None:
        try:
            self.sink.index_spool(self.chunk)
        except StoreError as exc:
            wait = self.backoff.next()
            print(
                f"tlsgate log daemon: {exc.one_line()}; indexing again in {wait:.1f} s",
                file=sys.stderr,
            )
            self.next_try = time.monotonic() + wait
        else:
            self.backoff.reset()
            self.next_try = 0.0


def serve(
    path: Path, fd: int, *, idle: float = IDLE, bound: int = BOUND, chunk: int = CHUNK
) -> None:
    """Spool every frame read from ``fd`` until it ends; index the spool after ``idle``
    seconds without a frame, or at once while more than ``bound`` records wait."""
    sink = SqliteLogSink(path)
    indexer = _Indexer(sink, chunk)
    try:
        waiting = _retrying(sink.spooled)
        while True:
            pause = indexer.pause()
            timeout: float | None = None  # nothing to index: wait for a frame
            if waiting > bound and not pause:
                indexer.run()  # past the bound: a chunk, then a frame if one waits
                waiting = _retrying(sink.spooled)
                timeout = 0.0
            elif waiting:
                timeout = max(idle, pause)  # a chunk once the member has been quiet
            if not select.select([fd], [], [], timeout)[0]:
                if timeout and not indexer.pause():
                    indexer.run()
                    waiting = _retrying(sink.spooled)
                continue
            head = _read_exact(fd, _FRAME.size)
            if head is None:
                return
            size, records = _FRAME.unpack(head)
            payload = _read_exact(fd, size)
            if payload is None:
                return
            _retrying(sink.spool, payload, records)
            waiting += records
    finally:
        sink.close()


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(
            "usage: python -m tlsgate.log.daemon LOG_DB_PATH (started by tlsgate serve)"
        )
    with contextlib.suppress(KeyboardInterrupt):
        serve(Path(sys.argv[1]), sys.stdin.fileno())


if __name__ == "__main__":
    main()
