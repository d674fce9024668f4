"""Benchmark: instructions per keep-alive request, counted by valgrind, per process.

On a shared machine the time a request takes moves by 20 % and more from one minute to
the next (other tenants take the cores); the number of instructions it executes does
not.  This runs ``benchmarks.cpu_per_request`` under valgrind (cachegrind without cache
simulation) twice, with N and 3N requests so that start-up cancels out, and prints the
instructions per request of tlsgate's proxy process and, with ``--log daemon``, of its
log daemon.  Instructions are not time (system calls and cache misses are not in them),
but they weigh a change to tlsgate's own code exactly: use it beside the timings.

    python -m benchmarks.instructions [--requests 1000] [--log off|daemon] [--plain]

Needs valgrind (``apt-get install valgrind``; ``scripts/bench.sh`` installs it).  Under
valgrind tlsgate runs ~30 times slower, so 1,000 requests take about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tlsgate.eventloop import CHOICES

ROOT = Path(__file__).resolve().parent.parent
_COMMAND = re.compile(r"^==(\d+)== Command: (.*)$", re.MULTILINE)
_REFS = re.compile(r"^==(\d+)== I\s+refs:\s+([\d,]+)$", re.MULTILINE)
ROLES = {"tlsgate.log.daemon": "log daemon", "benchmarks.cpu_per_request": "proxy"}


def instructions_by_role(valgrind_output: str) -> dict[str, int]:
    """Instructions per process role (``proxy``, ``log daemon``) from valgrind's log;
    processes of other commands (shells, helpers) are left out."""
    commands = dict(_COMMAND.findall(valgrind_output))
    counts: dict[str, int] = {}
    for pid, refs in _REFS.findall(valgrind_output):
        command = commands.get(pid, "")
        role = next((r for key, r in ROLES.items() if key in command), None)
        if role is not None:
            counts[role] = counts.get(role, 0) + int(refs.replace(",", ""))
    return counts


def count(requests: int, log: str, plain: bool, loop: str = "auto") -> dict[str, int]:
    """One run of ``cpu_per_request`` (a warm-up pass and one round: 2 x ``requests``)."""
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes",
        "--trace-children-skip=*nginx*,*curl*,/usr/*,/bin/*",
        "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.cpu_per_request",
        "--requests", str(requests), "--rounds", "1", "--log", log,
        "--loop", loop, *(["--plain"] if plain else []),
    ]  # fmt: skip
    # A fixed hash seed: str and bytes hashes (and so dict and set probing) are the same
    # in every run, which takes one source of run-to-run spread out of the counts.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600, env=env)
    if out.returncode != 0 or "best:" not in out.stdout:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"benchmarks.instructions: the measured run failed: {tail}")
    bad = re.findall(r"(\d+) failed", out.stdout)
    if any(int(n) for n in bad):
        raise SystemExit("benchmarks.instructions: some responses failed; see cpu_per_request")
    return instructions_by_role(out.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="N (1000): runs N and 3N")
    parser.add_argument("--log", choices=["off", "daemon"], default="off")
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of inspected")
    parser.add_argument("--loop", choices=CHOICES, default="auto", help="event loop (auto)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if shutil.which("valgrind") is None:
        sys.exit("benchmarks.instructions: valgrind not found: apt-get install valgrind")
    small = count(args.requests, args.log, args.plain, args.loop)
    large = count(3 * args.requests, args.log, args.plain, args.loop)
    measured = 2 * (3 * args.requests - args.requests)  # each run: warm-up + one round
    scheme = "http" if args.plain else "https"
    for role in sorted(large):
        per = (large[role] - small.get(role, 0)) / measured
        setting = f"{scheme}, log {args.log}, {args.loop}"
        print(f"{role}: {per:,.0f} instructions per request ({setting})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
