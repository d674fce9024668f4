"""What the harness reads from the operating system: process trees, their RSS and CPU
time, the file-descriptor limit, and a description of the machine.

Everything comes from ``/proc`` (Linux only), so the harness needs no extra package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import signal
import subprocess
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the harness dies, so no peer outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _children() -> dict[int, list[int]]:
    """parent pid → child pids, for every process visible now."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces and parentheses: split after the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (helpers, workers) that are alive now."""
    tree = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, ()))
    return out


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over ``pids`` in KiB (processes that exited count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (their own threads)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLK_TCK


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when root) towards ``wanted``; return the soft
    limit now in force. Children inherit it, so call before starting the peers.

    A proxy holding 10,000 idle inspected connections needs two descriptors each (client
    and upstream); this machine's default hard limit (20,000) is just short of that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1024 * 1024)
    return 0.0


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    return platform.system()


def machine_description() -> str:
    """One line: CPU model, cores, memory, OS, kernel, Python."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB memory, "
        f"{_os_name()}, Linux {platform.release()}, Python {platform.python_version()}"
    )


def command_version(
    args: list[str], *, line_with: str = "", env: dict[str, str] | None = None
) -> str:
    """First line of a ``--version`` style output (stdout or stderr) containing
    ``line_with``; ``"not installed"`` when the program is missing."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    for line in (done.stdout + done.stderr).splitlines():
        if line_with in line and line.strip():
            return line.strip()
    return "unknown"
