"""The log daemon: a child process that stores a member's Web Proxy log in SQLite.

Why a process, as Squid's ``log_file_daemon``: in the member, the writer thread took
the GIL back from the event loop once per inserted row, and SQLite's index work ran on
the same interpreter; measured, logging cost ~40% of keep-alive throughput.  Now the
member sends the batch as tuples of the fields (``to_wire``: a C-level attrgetter per
record, the time in microseconds) down a pipe as one ``marshal`` frame and goes on; the
daemon makes the rows (index keys) and inserts them.

Durability: a frame written to the pipe is stored even if the member then dies (the
daemon drains the pipe before it exits); a graceful stop waits for the daemon.  If the
daemon dies, it is restarted with the next batch; the frame it was inserting is lost.
"""

from __future__ import annotations

import contextlib
import marshal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from tlsgate.errors import StoreError
from tlsgate.log.database import SqliteLogSink, rows_from_wire, to_wire
from tlsgate.log.record import LogRecord, values_of

_FRAME = struct.Struct("!I")


class LogDaemonSink:
    """A LogSink whose inserts run in ``python -m tlsgate.log.daemon PATH``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = "sqlite"
        self.location = f"{self.path} (log daemon)"
        self._rows = SqliteLogSink(self.path)  # row conversion, retention, schema
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        self._rows.count()  # creates the schema here, so errors surface in the member
        return subprocess.Popen(
            [sys.executable, "-m", "tlsgate.log.daemon", str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start the daemon now (a member does at start-up, so a broken log store shows
        at once and the daemon's memory is not counted against the first requests)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()

    def write(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        payload = marshal.dumps(to_wire([values_of(r) for r in records]))
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                proc = self._proc = self._start()
            stdin = proc.stdin
            assert stdin is not None
            try:
                stdin.write(_FRAME.pack(len(payload)) + payload)
                stdin.flush()
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

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._rows.close()

    def __repr__(self) -> str:
        return f"LogDaemonSink({str(self.path)!r})"


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def serve(path: Path, stream: IO[bytes]) -> None:
    """Insert every frame from ``stream`` until it ends."""
    sink = SqliteLogSink(path)
    try:
        while True:
            head = _read_exact(stream, _FRAME.size)
            if head is None:
                return
            payload = _read_exact(stream, _FRAME.unpack(head)[0])
            if payload is None:
                return
            rows = rows_from_wire(marshal.loads(payload))
            delay = 0.1
            while True:
                try:
                    sink.write_rows(rows)
                    break
                except StoreError as exc:
                    # The member's pipe fills meanwhile; it buffers, then drops and counts.
                    print(f"tlsgate log daemon: {exc.one_line()}; retrying", file=sys.stderr)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
    finally:
        sink.close()


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(
            "usage: python -m tlsgate.log.daemon LOG_DB_PATH (started by tlsgate serve)"
        )
    with contextlib.suppress(KeyboardInterrupt):
        serve(Path(sys.argv[1]), sys.stdin.buffer)


if __name__ == "__main__":
    main()
