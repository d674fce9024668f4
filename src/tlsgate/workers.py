"""``tlsgate serve --workers N``: N processes accept on one port (``SO_REUSEPORT``).

One Python process uses one core.  On a machine with cores to spare, the first member
process (the supervisor) starts N-1 more ``tlsgate serve --worker`` processes on the
same address; the kernel spreads new connections over the N listening sockets.  Each
worker is a full member: it follows the configuration store, keeps its own upstream
pool and Web Proxy log writer (all write to the same log), and shows in ``tlsgate store
status`` as ``NAME/w2`` … ``NAME/wN``.  The admin console runs in the supervisor only.

Stop: SIGTERM/SIGINT to the supervisor is passed on to every worker at once, so they
drain together; the supervisor waits for them.  A worker that dies is started again
(after a second, with a warning); a worker whose supervisor dies gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from collections.abc import Sequence

log = logging.getLogger("tlsgate.workers")

RESTART_DELAY = 1.0


def worker_member_name(member: str, index: int) -> str:
    """``NAME/w2`` for the second process of member NAME (the supervisor keeps NAME)."""
    return f"{member}/w{index}"


def _die_with_parent() -> None:
    """In the worker before exec: SIGTERM when the supervisor dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Workers:
    """The supervisor's worker processes.

    ``command`` is the argument list after ``python -m tlsgate``; each worker gets
    ``--worker INDEX`` (2…N) added.  ``env``: the workers' environment (the store URL
    travels there, not on a command line that ``ps`` shows).
    """

    def __init__(
        self, count: int, command: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.count = count
        self._command = list(command)
        self._env = env
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []

    def _args(self, index: int) -> list[str]:
        return [sys.executable, "-m", "tlsgate", *self._command, "--worker", str(index)]

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *self._args(index), env=self._env, preexec_fn=_die_with_parent
        )
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    async def start(self) -> None:
        for index in range(2, self.count + 1):
            await self._spawn(index)
            self._watchers.append(
                asyncio.get_running_loop().create_task(self._watch(index), name=f"worker-{index}")
            )

    async def _watch(self, index: int) -> None:
        """Start worker ``index`` again whenever it exits (cancelled at the stop)."""
        while True:
            code = await self._procs[index].wait()
            log.warning(
                "worker %d exited with status %d; starting it again in %.0f s",
                index,
                code,
                RESTART_DELAY,
            )
            await asyncio.sleep(RESTART_DELAY)
            await self._spawn(index)

    def signal_stop(self) -> None:
        """Tell every worker to drain now (SIGTERM); none is started again."""
        for task in self._watchers:
            task.cancel()
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float) -> None:
        """SIGTERM (if not sent yet), wait up to ``timeout`` s, then SIGKILL the rest."""
        self.signal_stop()
        for index, proc in self._procs.items():
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("worker %d did not stop within %.0f s; killing it", index, timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = await proc.wait()
            if code != 0:
                log.warning("worker %d exited with status %d", index, code)
