"""Both event loops deliver every byte when a server closes while tlsgate has paused
reading from it.

REFERENCE.md: uvloop's own SSL transport lost the tail of 24 of 300 downloads in exactly
this case (the server sends a large response with ``Connection: close`` and the client
reads slowly, so the proxy stops reading the server, which closes meanwhile).  tlsgate
runs its own TLS over uvloop's plain TCP transports; this runs that case through
``serve --event-loop uvloop`` and ``--event-loop asyncio``, inspected and tunnelled, and
compares every body with the file nginx serves.  One download first waits until nginx
has logged the response as sent (so the server has closed) before it reads a byte: the
case is then certain, not left to timing.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import records
from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI
from tests.peers.tlsgate import TlsgateProcess

PATH = "/close/10m.bin"
WITNESS = "/close/1m.bin"  # fits in the buffers: nginx sends it all and closes
DOWNLOADS = 12  # per loop and mode: 120 MiB each
PARALLEL = 4


@pytest.fixture(scope="module")
def big_nginx(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    server = NginxServer(tmp_path_factory.mktemp("nginx-big"), big_files=True)
    server.add_server("tls", tls=pki.valid())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _sent(nginx: NginxServer, path: str) -> int:
    """How many responses to ``GET path`` nginx has logged (it logs once it has sent
    the whole response, and with ``Connection: close`` closes then)."""
    return sum(f'"GET {path} HTTP/1.1" 200' in line for line in nginx.access_log_lines())


def _logged(proxy: TlsgateProcess, mode: str, want: int) -> int:
    """The Web Proxy log's records of these downloads (the GETs when inspected, the
    CONNECTs when tunnelled: a tunnel's record is written when it closes), polled until
    there are ``want`` of them or 10 s have passed."""

    def download(r: dict) -> bool:
        if mode == "inspect":
            return bool(r["method"] == "GET" and "/close/" in r["url"])
        return bool(r["method"] == "CONNECT" and r["status"] == 200)

    return len(records(proxy, want=want, matching=download))


def _read_head(sock: socket.socket | ssl.SSLSocket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the end of the head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def download(
    proxy_port: int,
    target: tuple[str, int],
    cafile: Path,
    before_reading: Callable[[], None],
    path: str = PATH,
) -> bytes:
    """GET ``path`` through a CONNECT tunnel with a 16 KiB receive window; call
    ``before_reading`` after sending the request, then read to the end.  The body."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connect
    raw.settimeout(30)
    raw.connect(("127.0.0.1", proxy_port))
    host = f"{target[0]}:{target[1]}"
    raw.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head, rest = _read_head(raw)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert rest == b""
    context = ssl.create_default_context(cafile=str(cafile))
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        before_reading()  # meanwhile the proxy fills the window, pauses; the server closes
        head, body = _read_head(tls)
        assert head.startswith(b"HTTP/1.1 200"), head
        parts = [body]
        while chunk := tls.recv(1 << 20):
            parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("mode", ["inspect", "tunnel"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_no_byte_lost_when_the_server_closes_while_reading_is_paused(
    loop: str, mode: str, big_nginx: NginxServer, pki: TestPKI, tmp_path: Path
) -> None:
    port = big_nginx.port("tls")
    extra = ["--event-loop", loop, "--admin", "off"]
    if mode == "tunnel":
        extra.append("--no-inspect")
    proxy = TlsgateProcess(
        tmp_path / "home", upstream_ca=pki.ca_cert, extra_args=extra, connect_ports=[port]
    )
    (tmp_path / "home").mkdir()
    with proxy:
        proxy.wait_for_log("uvloop " if loop == "uvloop" else "asyncio event loop")
        proxy.wait_for_log("glibc malloc tuned")  # serve's default (malloc.py)
        cafile = pki.ca_cert if mode == "tunnel" else proxy.ca_cert
        target = (big_nginx.host("tls"), port)
        sent_before = _sent(big_nginx, WITNESS)

        def until_nginx_sent_it() -> None:
            deadline = time.monotonic() + 10
            while _sent(big_nginx, WITNESS) == sent_before:
                assert time.monotonic() < deadline, "nginx never finished: case not reached"
                time.sleep(0.05)

        witness = download(proxy.port, target, cafile, until_nginx_sent_it, WITNESS)
        assert witness == big_nginx.content("/1m.bin")
        pauses = [0.2 + 0.1 * (i % 4) for i in range(DOWNLOADS)]
        with ThreadPoolExecutor(PARALLEL) as pool:
            bodies = list(
                pool.map(
                    lambda p: download(proxy.port, target, cafile, lambda: time.sleep(p)), pauses
                )
            )
        logged = _logged(proxy, mode, DOWNLOADS + 1)  # the witness has a record too
    expected = big_nginx.content("/10m.bin")
    sizes = [len(b) for b in bodies]
    assert sizes == [len(expected)] * DOWNLOADS, f"{loop} {mode}: sizes {sizes}"
    digest = hashlib.sha256(expected).hexdigest()
    assert all(hashlib.sha256(b).hexdigest() == digest for b in bodies)
    assert logged == DOWNLOADS + 1
