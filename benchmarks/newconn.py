"""The load generator for workload 2: a new TCP connection and a full TLS handshake per
request, ``--parallel`` at a time, for ``--duration`` seconds.

Why not curl: curl 7.88 builds a new OpenSSL context for every connection and spends
~1.8 ms of CPU per handshake here (OpenSSL 3.0), so on its own it tops out near
550 connections/s — the generator, not the proxy, would set the number. This client
shares one ``SSLContext`` (~1.1 ms per handshake, near ``openssl s_time``'s floor)
and never resumes a session. It prints one line per request in curl's ``-w`` format
of ``benchmarks.load`` (status, size, seconds, new connections), then
``elapsed SECONDS``:

    python -m benchmarks.newconn --target 127.0.0.1:8443 --path /1k.bin --size 1024 \\
        --cacert ca.pem [--proxy-port 3128] --parallel 8 --duration 6
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import time
from pathlib import Path

from benchmarks.load import fetch, open_tls


async def _run(
    target: tuple[str, int],
    path: str,
    proxy_port: int | None,
    cacert: Path,
    parallel: int,
    duration: float,
) -> tuple[list[str], float]:
    context = ssl.create_default_context(cafile=str(cacert))
    context.check_hostname = False  # an IP target; the chain is still verified
    # A full handshake every time: no tickets, no session cache on our side.
    context.options |= ssl.OP_NO_TICKET
    # Resolve once: a name would cost a getaddrinfo in a thread on every connect.
    address = (socket.gethostbyname(target[0]), target[1])
    lines: list[str] = []
    started = time.monotonic()
    end = started + duration

    async def worker() -> None:
        while time.monotonic() < end:
            t0 = time.monotonic()
            status, size = 0, 0
            try:
                sock, tls = await open_tls(proxy_port, target, context, address)
                try:
                    status, size = await fetch(tls, target, path, close=True)
                finally:
                    sock.close()
            except (OSError, ssl.SSLError, ConnectionError, IndexError, ValueError) as exc:
                lines.append(f"error {type(exc).__name__}: {exc}")
            lines.append(f"{status:03d} {size} {time.monotonic() - t0:.6f} 1")

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return lines, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.newconn")
    parser.add_argument("--target", required=True, help="HOST:PORT of the TLS server")
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--cacert", type=Path, required=True)
    parser.add_argument("--proxy-port", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    lines, elapsed = asyncio.run(
        _run((host, int(port)), args.path, args.proxy_port, args.cacert, args.parallel,
             args.duration)
    )  # fmt: skip
    sys.stdout.write("\n".join([*lines, f"elapsed {elapsed:.6f}", ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
