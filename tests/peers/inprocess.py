"""tlsgate's proxy in the calling process: the real Runtime and listener, no CLI.

For tests and measurements that need to look inside (``Runtime.fast_served``, the
records themselves) or to count only the proxy's own CPU time.
"""

from __future__ import annotations

from pathlib import Path

from tlsgate.config.home import Home
from tlsgate.config.loader import parse_config
from tlsgate.config.model import UpstreamSettings
from tlsgate.proxy.runtime import RecordSink, Runtime
from tlsgate.proxy.server import Listen, Listening, start_listener
from tlsgate.tls.ca import LeafMinter, load_or_create_ca


async def start_proxy(
    home_dir: Path,
    upstream_ca: Path,
    connect_ports: list[int],
    log: RecordSink,
    *,
    timeouts: dict[str, float] | None = None,
    member: str = "test",
) -> tuple[Runtime, Listening, Path]:
    """A proxy on 127.0.0.1 (an ephemeral port) whose one rule, "Allow web access",
    allows Internal clients anywhere and CONNECT to ``connect_ports``; it trusts
    ``upstream_ca`` for servers.  Returns the runtime, the listener and the CA
    certificate clients must trust."""
    home = Home(home_dir).ensure()
    config = parse_config(
        {
            "timeouts": timeouts or {},
            "rules": [
                {
                    "name": "Allow web access",
                    "action": "allow",
                    "sources": ["Internal"],
                    "destinations": ["any"],
                    "connect_ports": connect_ports,
                }
            ],
        },
        source=f"{__name__}.start_proxy",
    )
    runtime = Runtime(
        config=config,
        minter=LeafMinter(load_or_create_ca(home), home),
        log=log,
        member=member,
        upstream_ca_override=UpstreamSettings(ca_file=upstream_ca),
    )
    server = await start_listener(runtime, Listen("127.0.0.1", 0))
    return runtime, server, home.ca_cert
