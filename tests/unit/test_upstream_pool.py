"""The upstream pool with real loopback connections: reuse, most recent first, expiry."""

from __future__ import annotations

import asyncio

from tlsgate.proxy.connection import open_connection
from tlsgate.proxy.upstream import UpstreamKey, UpstreamPool

KEY = UpstreamKey("http", "127.0.0.1", 1, None)


def test_reuse_expiry_and_dead_connections():
    async def run() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(idle_timeout=0.5)
        pool.SWEEP = 0.2
        a = await open_connection("127.0.0.1", port)
        b = await open_connection("127.0.0.1", port)
        pool.put(KEY, a)
        pool.put(KEY, b)
        assert pool.idle_count == 2
        assert pool.get(KEY) is b  # most recently used first
        pool.put(KEY, b)
        b.close()
        await asyncio.sleep(0.05)
        assert pool.get(KEY) is a  # a closed connection is skipped
        pool.put(KEY, a)
        await asyncio.sleep(1.0)
        assert pool.idle_count == 0 and pool.get(KEY) is None
        await asyncio.sleep(0.05)
        assert a.closed  # expired connections are closed, not just forgotten
        server.close()

    asyncio.run(run())
