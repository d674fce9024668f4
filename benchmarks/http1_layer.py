"""Benchmark: tlsgate's HTTP/1 layer per proxied request, in isolation.

What the proxy's HTTP/1 code does for one inspected keep-alive request, without sockets
or TLS: read the client's request (``RequestReader``, one reader for the connection),
write the origin-form head for the server, read the server's response
(``ResponseReader``, one per response) and write the client's head.  Prints the CPU per
request, best of the rounds.  Use it to weigh the HTTP/1 layer alone, e.g. the same code
compiled (BENCHMARKS.md measured mypyc with it)::

    python -m benchmarks.http1_layer [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time

from tlsgate.config.model import Limits
from tlsgate.http1 import writer
from tlsgate.http1.events import RequestHead, ResponseHead
from tlsgate.http1.reader import RequestReader, ResponseReader

REQUEST = (
    b"GET /1k.bin HTTP/1.1\r\nHost: localhost:8443\r\nUser-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 06:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 05:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6745a1b0-400"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 1024
)


def one_request(requests: RequestReader, limits: Limits) -> bytes:
    """The HTTP/1 work of one proxied request; the head sent to the client."""
    head = requests.feed(REQUEST)[0]
    if not isinstance(head, RequestHead):
        raise SystemExit(f"benchmarks.http1_layer: the request did not parse: {head}")
    writer.upstream_request_head(
        head, path=head.raw_target, host=b"localhost:8443", framing=head.framing
    )
    response = ResponseReader(limits, head.method).feed(RESPONSE)[0]
    if not isinstance(response, ResponseHead):
        raise SystemExit(f"benchmarks.http1_layer: the response did not parse: {response}")
    return writer.client_response_head(
        response, framing=response.framing, keep_alive=True, client_version=(1, 1)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http1_layer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=20_000, help="per round (20000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    limits = Limits()
    requests = RequestReader(limits, in_tunnel=True)
    best = float("inf")
    for _ in range(args.rounds):
        cpu0 = time.process_time()
        for _ in range(args.requests):
            one_request(requests, limits)
        best = min(best, time.process_time() - cpu0)
    print(f"best: {best / args.requests * 1e6:.2f} us of CPU per request (HTTP/1 layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
