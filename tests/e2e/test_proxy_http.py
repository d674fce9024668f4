"""Plain HTTP through a real tlsgate to a real nginx, with curl, httpx and raw sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import curl
from tests.peers.nginx import NginxServer, parse_echo
from tests.peers.tlsgate import TlsgateProcess


def raw_exchange(proxy: TlsgateProcess, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize("path", ["/1k.bin", "/1m.bin"])
def test_get_is_byte_identical(proxy, nginx, path):
    r = curl(nginx.url("plain", path), proxy=proxy)
    assert r.returncode == 0, r.stderr
    assert r.stdout == nginx.content(path)


def test_httpx_client_through_proxy(proxy, nginx):
    with httpx.Client(proxy=proxy.proxy_url) as client:
        for _ in range(3):
            r = client.get(nginx.url("plain", "/1k.bin"))
            assert r.status_code == 200 and r.content == nginx.content("/1k.bin")
            assert "tlsgate" in r.headers["via"]


def test_via_added_and_hop_by_hop_removed(proxy, nginx):
    r = curl(
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Proxy-Connection: keep-alive",
        nginx.url("plain", "/echo"),
        proxy=proxy,
    )
    echo = parse_echo(r.stdout.decode())
    assert "tlsgate" in echo["via"]
    assert "x-secret" not in r.stdout.decode().lower()
    assert echo["connection"] in ("", "-", "keep-alive", "close")


def test_put_body_roundtrip_content_length_and_chunked(proxy, nginx, tmp_path):
    body = os.urandom(3 * 1024 * 1024 + 17)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    r = curl("-T", str(f), nginx.url("plain", "/upload/cl.bin"), proxy=proxy)
    assert r.returncode == 0, r.stderr
    assert nginx.uploaded("/upload/cl.bin") == body
    # chunked request body (curl reads stdin of unknown length)
    r = subprocess_chunked_put(proxy, nginx.url("plain", "/upload/chunked.bin"), body)
    assert nginx.uploaded("/upload/chunked.bin") == body


def subprocess_chunked_put(proxy, url, body):
    import subprocess

    return subprocess.run(
        ["curl", "-sS", "-x", proxy.proxy_url, "-H", "Transfer-Encoding: chunked", "-T", "-", url],
        input=body,
        capture_output=True,
        timeout=30,
        check=True,
    )


def test_expect_100_continue(proxy, nginx, tmp_path):
    body = os.urandom(200_000)
    f = tmp_path / "e.bin"
    f.write_bytes(body)
    r = curl(
        "-v",
        "-H",
        "Expect: 100-continue",
        "-T",
        str(f),
        nginx.url("plain", "/upload/e.bin"),
        proxy=proxy,
    )
    assert r.returncode == 0
    assert b"HTTP/1.1 100 Continue" in r.stderr
    assert nginx.uploaded("/upload/e.bin") == body


def test_head_and_no_body_statuses_keep_the_connection_in_sync(proxy, nginx):
    with httpx.Client(proxy=proxy.proxy_url) as client:
        h = client.head(nginx.url("plain", "/1m.bin"))
        assert h.status_code == 200 and h.headers["content-length"] == str(1024 * 1024)
        assert h.content == b""
        assert client.get(nginx.url("plain", "/status/204")).status_code == 204
        r = client.get(nginx.url("plain", "/1k.bin"))
        assert r.content == nginx.content("/1k.bin")
        assert client.get(nginx.url("plain", "/status/404")).status_code == 404


def test_chunked_and_close_delimited_responses(proxy, nginx):
    r = curl("-D", "-", nginx.url("plain", "/chunked"), proxy=proxy)
    assert r.returncode == 0
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == nginx.content("/1m.bin")
    r2 = curl(nginx.url("plain", "/close/1m.bin"), proxy=proxy)
    assert r2.returncode == 0 and r2.stdout == nginx.content("/1m.bin")


def test_keep_alive_reuses_client_connection(proxy, nginx):
    url = nginx.url("plain", "/1k.bin")
    r = curl("-v", url, url, url, proxy=proxy)
    assert r.returncode == 0
    assert (
        r.stderr.count(b"Re-using existing connection") + r.stderr.count(b"Reusing existing") >= 2
    )


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET http://a/ HTTP/1.1\r\n\r\n", b"400"),
        (b"GET http://a/ HTTP/2.0\r\nHost: a\r\n\r\n", b"505"),
        (b"GET /relative HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    ],
)
def test_malformed_requests_get_a_status_and_close(proxy, raw, status):
    reply = raw_exchange(proxy, raw)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
    assert b"Connection: close" in reply
    assert b"Traceback" not in reply


def test_refused_upstream_is_502_with_reason(proxy):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = curl("-i", f"http://127.0.0.1:{port}/", proxy=proxy)
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 502")
    assert "X-Tlsgate-Status: 10061" in out
    assert "refused the connection" in out


def test_upstream_that_never_answers_is_504(pki, tmp_path):
    """A real listener that accepts and stays silent; the response timeout is 1 s."""
    cfg = tmp_path / "tlsgate.toml"
    cfg.write_text("[timeouts]\nupstream_response = 1.0\n")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    try:
        with TlsgateProcess(home, extra_args=["--config", str(cfg)]) as p:
            r = curl("-i", f"http://127.0.0.1:{port}/", proxy=p)
            assert r.stdout.startswith(b"HTTP/1.1 504"), r.stdout[:200]
    finally:
        silent.close()


def test_sigterm_drains_in_flight_download(pki, nginx: NginxServer, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    p = TlsgateProcess(home).start()
    result: dict = {}

    def download():
        result["r"] = curl(nginx.url("plain", "/slow"), proxy=p, timeout=20)

    t = threading.Thread(target=download)
    t.start()
    time.sleep(0.4)  # the download (1 MiB at 1 MiB/s) is in flight
    assert p.stop(signal.SIGTERM) == 0
    t.join()
    assert result["r"].returncode == 0
    assert result["r"].stdout == nginx.content("/1m.bin")
    # once stopped, nothing listens
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


def test_slow_drip_head_gets_408(tmp_path):
    """A client dripping its head a byte at a time is cut at the absolute deadline."""
    home = tmp_path / "home"
    home.mkdir()
    with (
        TlsgateProcess(home, config="[timeouts]\nclient_header = 1.0\n") as p,
        socket.create_connection(("127.0.0.1", p.port), timeout=10) as s,
    ):
        started = time.monotonic()
        reply = b""
        for byte in b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            s.setblocking(False)
            try:
                reply += s.recv(65536)
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
            if reply:
                break
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        assert time.monotonic() - started < 5


def test_a_second_answer_from_the_server_is_never_relayed(tmp_path):
    """A server that answers every request twice in one write (a desync attempt): the
    client gets only the first answer, and the next request goes out on a fresh server
    connection instead of reading the leftover answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    connections = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected"
            )

    threading.Thread(target=serve, daemon=True).start()
    home = tmp_path / "home"
    home.mkdir()
    try:
        with TlsgateProcess(home) as p, socket.create_connection(("127.0.0.1", p.port)) as c:
            c.settimeout(5)
            got = b""
            for path in ("/a", "/b"):
                c.sendall(
                    b"GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: x\r\n\r\n" % (port, path.encode())
                )
                while got.count(b"first") < (1 if path == "/a" else 2):
                    chunk = c.recv(65536)
                    assert chunk, got
                    got += chunk
            c.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                got += c.recv(65536)
        assert got.count(b"HTTP/1.1 200") == 2 and b"injected" not in got, got
        assert len(connections) == 2  # the answered-twice connection was not reused
    finally:
        server.close()
        for conn in connections:
            conn.close()
