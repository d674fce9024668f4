"""Free loopback ports and waiting for a listener to come up."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

# Ports already handed out in this process: the kernel may offer a just-closed port
# again, and two servers configured before either starts must not share one.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now and not handed out before.

    The kernel picks it (bind to port 0); there is a small race until the caller
    binds it, which is acceptable for tests on a private loopback.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port found on {host}")


def wait_for_port(
    host: str, port: int, timeout: float = 20.0, alive: Callable[[], bool] | None = None
) -> None:
    """Poll until a TCP connect to ``host:port`` succeeds.

    ``alive`` is an optional callable returning False once the server process died,
    so a crash is reported at once instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"server for {host}:{port} exited before it listened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
        time.sleep(0.02)
