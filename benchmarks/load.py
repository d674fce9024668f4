"""Load generation: timed curl runs for the rate workloads, and a connection holder for
the memory workload.

``run_curl`` starts ``curl --parallel`` on a URL glob of practically endless length
(``/1k.bin?[1-100000000]``), lets it run for the cell's duration and stops it. curl
writes one line per finished transfer (status, size, time, new connections) to stderr,
line-buffered through ``stdbuf -eL`` so a stop loses no finished transfer and the
writes stay cheap (unbuffered stderr costs curl ~25% of its rate). Every line is
checked against the expected status and size; anything else is a failure.

``hold_connections`` opens N connections through a proxy with asyncio and keeps them
idle: CONNECT, then TLS (a request and its whole response too when inspected).  TLS
runs over ``ssl.MemoryBIO`` on plain sockets, so the client's own memory stays small
(asyncio's SSL transport would hold ~0.5 MiB per connection on the client side).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.system import cpu_seconds, die_with_parent

CURL_FORMAT = "%{stderr}%{http_code} %{size_download} %{time_total} %{num_connects}\n"
GLOB = "?[1-100000000]"
MAX_ERRORS_KEPT = 5


@dataclass
class Sample:
    """One measured cell: a load generator run against one target."""

    ok: int = 0
    failed: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    new_connections: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds over the run: ``proxy``, ``nginx``, ``generator``."""
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Successful transfers per second."""
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def mbps(self) -> float:
        """Megabytes (10^6) of checked bodies per second."""
        return self.bytes / self.elapsed / 1e6 if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else 0.0
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[round(q) - 1] * 1000


def _cpu_now(watch: dict[str, Callable[[], list[int]]]) -> dict[str, float]:
    return {name: cpu_seconds(pids()) for name, pids in watch.items()}


def run_curl(
    url: str,
    *,
    cacert: Path | None,
    expect_size: int,
    parallel: int,
    duration: float,
    proxy: str | None = None,
    new_connection: bool = False,
    watch: dict[str, Callable[[], list[int]]] | None = None,
    transfer_timeout: float = 60.0,
) -> Sample:
    """Run curl on ``url`` (glob appended) for ``duration`` seconds and check every
    response. ``watch`` maps a name to a function giving the pids whose CPU time is
    measured over the run (the proxy's tree, nginx's)."""
    watch = watch or {}
    args = [
        "stdbuf", "-eL",
        "curl", "--http1.1", "--no-progress-meter",
        "--parallel", "--parallel-max", str(parallel),
        "--max-time", str(transfer_timeout),
        "-o", "/dev/null",
        "-w", CURL_FORMAT,
    ]  # fmt: skip
    if cacert is not None:
        args += ["--cacert", str(cacert)]
    if proxy is not None:
        args += ["--proxy", proxy]
    if new_connection:
        # A full handshake per request: the server closes, and no TLS session reuse.
        args += ["-H", "Connection: close", "--no-sessionid"]
    args.append(url + GLOB)
    return _generate(args, watch, duration, expect_size, stop=True)


def run_newconn(
    target: tuple[str, int],
    path: str,
    *,
    cacert: Path,
    expect_size: int,
    parallel: int,
    duration: float,
    proxy_port: int | None = None,
    watch: dict[str, Callable[[], list[int]]] | None = None,
) -> Sample:
    """Workload 2 with ``benchmarks.newconn`` (see there why not curl)."""
    args = [
        sys.executable, "-m", "benchmarks.newconn",
        "--target", f"{target[0]}:{target[1]}",
        "--path", path,
        "--cacert", str(cacert),
        "--parallel", str(parallel),
        "--duration", str(duration),
    ]  # fmt: skip
    if proxy_port is not None:
        args += ["--proxy-port", str(proxy_port)]
    return _generate(args, watch or {}, duration, expect_size, stop=False)


def _generate(
    args: list[str],
    watch: dict[str, Callable[[], list[int]]],
    duration: float,
    expect_size: int,
    *,
    stop: bool,
) -> Sample:
    """Run a generator; ``stop``: kill it after ``duration`` (curl runs forever),
    else let it end by itself (it prints its own ``elapsed`` line)."""
    with tempfile.TemporaryFile() as out:
        before = _cpu_now(watch)
        start = time.monotonic()
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=die_with_parent,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        # Reap with wait4 (not Popen.wait): it gives the generator's own CPU time.
        limit = start + (duration if stop else duration + 120)
        # curl is killed mid-transfer: the rate counts up to the last finished transfer
        # (when its line was written), so in-flight downloads do not dilute MB/s.
        last_line, written = start, 0
        while True:
            size = os.fstat(out.fileno()).st_size
            if size != written:
                written, last_line = size, time.monotonic()
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                ended_early = stop
                break
            if time.monotonic() >= limit:
                ended_early = not stop
                proc.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        elapsed = time.monotonic() - start
        after = _cpu_now(watch)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    sample = parse_curl_lines(text, expect_size)
    if not sample.elapsed:  # the Python generator reports its own; curl's is measured
        sample.elapsed = last_line - start if sample.ok and stop else elapsed
    sample.cpu = {name: after[name] - before[name] for name in watch}
    sample.cpu["generator"] = usage.ru_utime + usage.ru_stime
    if ended_early:
        sample.failed += 1
        sample.errors.append(f"load generator exited with {proc.returncode} at the wrong time")
    return sample


def parse_curl_lines(text: str, expect_size: int) -> Sample:
    """Count checked transfers in curl's ``CURL_FORMAT`` lines. Lines that are not
    transfer records are curl's own error messages: kept (a few) as examples."""
    sample = Sample()
    lines = text.split("\n")
    lines.pop()  # the text after the last newline: empty, or cut short by the stop
    for line in lines:
        parts = line.split(" ")
        if parts[0] == "elapsed" and len(parts) == 2:
            sample.elapsed = float(parts[1])
            continue
        if len(parts) != 4 or not parts[0].isdigit():
            if line.strip() and len(sample.errors) < MAX_ERRORS_KEPT:
                sample.errors.append(line.strip())
            continue
        code, size, seconds, connects = parts
        sample.new_connections += int(connects)
        if code == "200" and int(size) == expect_size:
            sample.ok += 1
            sample.bytes += expect_size
            sample.latencies.append(float(seconds))
        else:
            sample.failed += 1
            if len(sample.errors) < MAX_ERRORS_KEPT:
                sample.errors.append(f"status {code}, {size} bytes (want 200, {expect_size})")
    return sample


# -- the memory workload: idle connections held open --------------------------------------


# socket → its TLS state while held: the TLS session stays open on our side too.
_tls_of: dict[socket.socket, _Tls] = {}


class _Tls:
    """A TLS client over a non-blocking socket, pumped through MemoryBIOs."""

    __slots__ = ("incoming", "obj", "outgoing", "sock")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=None)

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _fill(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionError("connection closed during TLS")
        self.incoming.write(data)

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
        await self._flush()

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        await self._flush()

    async def recv(self) -> bytes:
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()


async def _read_http_head(read: Callable[[], Awaitable[bytes]], buf: bytearray) -> bytes:
    while b"\r\n\r\n" not in buf:
        chunk = await read()
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return -1


async def open_tls(
    proxy_port: int | None,
    target: tuple[str, int],
    context: ssl.SSLContext,
    address: tuple[str, int] | None = None,
) -> tuple[socket.socket, _Tls]:
    """A TCP connection to ``target`` (by CONNECT through the proxy on ``proxy_port``,
    or straight to ``address``, the target's resolved address), with the TLS handshake
    done. The caller closes the socket."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        host, port = target
        if proxy_port is not None:
            await loop.sock_connect(sock, ("127.0.0.1", proxy_port))
            await loop.sock_sendall(
                sock, f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            buf = bytearray()
            head = await _read_http_head(lambda: loop.sock_recv(sock, 4096), buf)
            if head.split(b" ", 2)[1:2] != [b"200"]:
                first_line = head.split(b"\r\n", 1)[0]
                raise ConnectionError(f"CONNECT answered {first_line!r}")
        else:
            await loop.sock_connect(sock, address or target)
        tls = _Tls(sock, context)
        await tls.handshake()
        return sock, tls
    except BaseException:
        sock.close()
        raise


async def fetch(
    tls: _Tls, target: tuple[str, int], path: str, *, close: bool = False
) -> tuple[int, int]:
    """GET ``path`` over ``tls``; return (status, body bytes received).

    Reads exactly Content-Length bytes (nginx always sends it for these files)."""
    host, port = target
    extra = "Connection: close\r\n" if close else ""
    await tls.send(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode())
    buf = bytearray()
    head = await _read_http_head(tls.recv, buf)
    status = int(head.split(b" ", 2)[1])
    length = _content_length(head)
    while len(buf) < length:
        chunk = await tls.recv()
        if not chunk:
            break
        buf += chunk
    return status, len(buf)


async def _open_idle(
    proxy_port: int | None,
    target: tuple[str, int],
    context: ssl.SSLContext,
    request_path: str | None,
    expect_size: int,
) -> socket.socket:
    """One connection, TLS done and, when ``request_path``, one checked request."""
    sock, tls = await open_tls(proxy_port, target, context)
    try:
        if request_path is not None:
            status, size = await fetch(tls, target, request_path)
            if status != 200 or size != expect_size:
                raise ConnectionError(f"response {status} with {size} bytes")
    except BaseException:
        sock.close()
        raise
    _tls_of[sock] = tls
    return sock


@dataclass
class Held:
    """Connections held open by ``hold_connections``."""

    sockets: list[socket.socket]
    failed: int
    errors: list[str]
    seconds: float
    timed_out: bool

    def close(self) -> None:
        for sock in self.sockets:
            _tls_of.pop(sock, None)
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()


async def hold_connections(
    count: int,
    *,
    proxy_port: int | None,
    target: tuple[str, int],
    cacert: Path,
    request_path: str | None,
    expect_size: int = 0,
    concurrency: int = 50,
    deadline: float = 180.0,
) -> Held:
    """Open ``count`` connections (``concurrency`` at a time, within ``deadline``
    seconds) and return them open and idle."""
    context = ssl.create_default_context(cafile=str(cacert))
    context.check_hostname = False  # an IP target: the chain is what is checked
    held: list[socket.socket] = []
    errors: list[str] = []
    failed = 0
    started = time.monotonic()
    todo = count
    timed_out = False

    async def worker() -> None:
        nonlocal todo, failed, timed_out
        while todo > 0:
            if time.monotonic() - started > deadline:
                timed_out = True
                return
            todo -= 1
            try:
                held.append(
                    await _open_idle(proxy_port, target, context, request_path, expect_size)
                )
            except (OSError, ssl.SSLError, ConnectionError, IndexError, ValueError) as exc:
                failed += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return Held(held, failed, errors, time.monotonic() - started, timed_out)
