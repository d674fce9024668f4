"""``Connection.watch_end`` with real loopback connections: the fast path's watch over
a server connection while no task reads it (end of stream, no answer in time, unwatch)."""

from __future__ import annotations

import asyncio

from tlsgate.proxy.connection import Connection, _Deadlines, open_connection


async def _pair() -> tuple[asyncio.Server, list[asyncio.StreamWriter], int]:
    writers: list[asyncio.StreamWriter] = []

    async def keep(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    return server, writers, server.sockets[0].getsockname()[1]


def test_end_of_stream_timeout_and_unwatch() -> None:
    async def run() -> None:
        server, writers, port = await _pair()
        seen: dict[str, list[BaseException | None]] = {"closed": [], "silent": [], "forgot": []}
        closed = await open_connection("127.0.0.1", port)
        silent = await open_connection("127.0.0.1", port)
        forgot = await open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        closed.watch_end(30.0, seen["closed"].append)
        silent.watch_end(0.1, seen["silent"].append)
        forgot.watch_end(0.1, seen["forgot"].append)
        forgot.unwatch()
        writers[0].close()  # the server ends the first connection
        await asyncio.sleep(0.2)
        assert seen["closed"] == [None]  # once, at the end of the stream
        await asyncio.sleep(2 * _Deadlines.INTERVAL + 0.2)
        [timeout] = seen["silent"]  # once, when the deadline passed
        assert isinstance(timeout, TimeoutError)
        assert seen["forgot"] == []
        assert seen["closed"] == [None]  # nothing twice
        for conn in (closed, silent, forgot):
            conn.abort()
        server.close()

    asyncio.run(run())


def test_a_connection_already_at_its_end_reports_it_soon_not_at_once() -> None:
    async def run() -> None:
        server, writers, port = await _pair()
        conn: Connection = await open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        writers[0].close()
        await asyncio.sleep(0.1)
        assert conn.at_eof
        seen: list[BaseException | None] = []
        conn.watch_end(30.0, seen.append)
        assert seen == []  # as a future's callback: from the loop, after this call
        await asyncio.sleep(0)
        assert seen == [None]
        conn.abort()
        server.close()

    asyncio.run(run())
