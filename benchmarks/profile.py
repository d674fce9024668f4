"""Benchmark: where a proxy's CPU goes under load, per function of tlsgate's compiled code.

py-spy sees Python frames only, and tlsgate's hot path is compiled by mypyc into C, so
this samples the proxy process with ``perf`` (software clock, DWARF call stacks) while
one rate workload of ``benchmarks.run`` runs against it, then charges every sample to
its nearest owner on the stack:

* a function of tlsgate's compiled code (``connection.Connection.write``), with what it
  calls in CPython's C API (allocations, dict lookups, method calls on other objects);
* or one of the shared costs that no tlsgate function owns alone: ``[syscall write]``
  (on loopback the sender also pays for the receiver's TCP processing), ``[OpenSSL
  read]`` / ``[OpenSSL write]`` (TLS records), ``[llhttp]`` (httptools' parser),
  ``[ssl message hook]`` (CPython building the arguments of the private TLS message
  hook, for every record, before tlsgate's ``_on_tls_message`` runs);
* or ``[interpreted Python]``: code the interpreter runs (perf cannot name Python
  3.11's frames), named by the compiled function that called it when one did (ssl.py's
  ``SSLObject`` methods are interpreted).

    python -m benchmarks.profile [--proxy tlsgate] [--workload keepalive8]
                                 [--duration 8] [--frequency 499] [--top 40]

Each share is also given as microseconds per request: the share of the proxy's CPU
time (from /proc) divided by the requests served.  Needs ``perf`` (Debian
``linux-perf``; ``scripts/bench.sh`` installs it) and permission to sample another
process (root, or ``kernel.perf_event_paranoid`` <= 1).  Sampling slows the proxy by
~10 %; compare shares within one run, not the rate with ``benchmarks.run``'s.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers import ALL_KINDS, PeerError
from benchmarks.run import start_setting, work_directory
from benchmarks.system import cpu_seconds
from benchmarks.workloads import RATE_WORKLOADS, Target, measure_rate

Stack = list[str]
"""One sample's frames, innermost first, as perf names them."""

# Frames that own a sample whichever tlsgate function called them.
_INTERPRETED = "[interpreted Python]"
_SHARED: dict[str, str] = {
    "_PyEval_EvalFrameDefault": _INTERPRETED,
    "_PySSL_msg_callback": "[ssl message hook]",
    "SSL_read_ex": "[OpenSSL read]",
    "SSL_write_ex": "[OpenSSL write]",
    "SSL_read": "[OpenSSL read]",  # Squid's calls
    "SSL_write": "[OpenSSL write]",
    "SSL_do_handshake": "[OpenSSL handshake]",
    "llhttp__internal__run": "[llhttp]",
}
_SYSCALL_ENTRY = ("entry_SYSCALL_64", "do_syscall_64")
# The C library's system call wrappers, by the name the table shows.
_SYSCALLS: dict[str, str] = {
    "__GI___libc_write": "write",
    "__libc_write": "write",
    "__GI___libc_read": "read",
    "__libc_read": "read",
    "epoll_wait": "epoll_wait",
    "__GI_epoll_pwait": "epoll_wait",
    "epoll_pwait": "epoll_wait",
    "__libc_sendmsg": "sendmsg",
    "__libc_recvmsg": "recvmsg",
    "__libc_pwrite64": "pwrite",
    "__libc_pread64": "pread",
}
_COMPILED = "CPyDef_"
_AT_EXIT = "Py_FinalizeEx"


def parse_perf_script(text: str) -> Iterator[Stack]:
    """Stacks from ``perf script -F ip,sym`` output: blank-line separated samples, one
    ``<address> <symbol>`` line per frame, innermost first."""
    for block in text.split("\n\n"):
        frames = []
        for line in block.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1].removesuffix(" (inlined)").strip())
        if frames:
            yield frames


def compiled_name(symbol: str) -> str:
    """``CPyDef_connection___Connection____tls_read_all`` ->
    ``connection.Connection._tls_read_all`` (mypyc joins names with three underscores)."""
    return ".".join(symbol.removeprefix(_COMPILED).split("___"))


def owner(stack: Stack) -> str:
    """Who a sample is charged to: the innermost shared cost or compiled tlsgate function
    on its stack; a system call by name; else ``[other] <innermost frame>``."""
    if any(f in _SYSCALL_ENTRY for f in stack):
        call = next((_SYSCALLS[f] for f in stack if f in _SYSCALLS), None)
        if call is not None:
            return f"[syscall {call}]"
    for i, frame in enumerate(stack):
        shared = _SHARED.get(frame)
        if shared == _INTERPRETED:
            # Interpreted code called by compiled code (ssl.py's SSLObject methods, say):
            # named by its caller, since perf cannot name Python 3.11's frames.
            caller = next((f for f in stack[i + 1 :] if f.startswith(_COMPILED)), None)
            if caller is not None:
                return f"{_INTERPRETED} called by {compiled_name(caller)}"
        if shared is not None:
            return shared
        if frame.startswith(_COMPILED):
            return compiled_name(frame)
    return f"[other] {stack[0]}"


@dataclass
class Profile:
    """Samples per owner, for the steady state (samples taken at exit left out)."""

    owners: collections.Counter[str]
    samples: int

    @classmethod
    def of(cls, stacks: Iterable[Stack]) -> Profile:
        owners: collections.Counter[str] = collections.Counter()
        for stack in stacks:
            if _AT_EXIT not in stack:
                owners[owner(stack)] += 1
        return cls(owners, sum(owners.values()))

    def table(self, top: int, us_per_sample: float | None) -> str:
        """The ``top`` owners as a markdown table: share, and µs per request if known."""
        head = "| owner | share |" + (" µs/request |" if us_per_sample else "")
        lines = [head, "|---|---:|" + ("---:|" if us_per_sample else "")]
        for name, n in self.owners.most_common(top):
            row = f"| {name} | {n / self.samples:.1%} |"
            if us_per_sample:
                row += f" {n * us_per_sample:.1f} |"
            lines.append(row)
        rest = self.samples - sum(n for _, n in self.owners.most_common(top))
        if rest:
            lines.append(f"| (the other {len(self.owners) - top} owners) | "
                         f"{rest / self.samples:.1%} |"
                         + (f" {rest * us_per_sample:.1f} |" if us_per_sample else ""))  # fmt: skip
        return "\n".join(lines)


def record(pid: int, out: Path, frequency: int) -> subprocess.Popen[bytes]:
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(frequency),
           "--call-graph", "dwarf,16384", "-p", str(pid), "-o", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_recording(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("benchmarks.profile: perf record did not stop") from None
    if proc.returncode not in (0, -signal.SIGINT):
        lines = [line.strip() for line in err.decode(errors="replace").splitlines()]
        said = " ".join(line for line in lines if line)[:300] or "no output"
        raise SystemExit(f"benchmarks.profile: perf record failed: {said}")


def stacks_of(data: Path) -> list[Stack]:
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"benchmarks.profile: perf script failed: {tail}")
    return list(parse_perf_script(out.stdout))


def profile(
    proxy: str,
    workload_key: str,
    duration: float,
    frequency: int,
    top: int,
    keep: Path | None = None,
) -> str:
    """Start nginx and ``proxy``, sample it under ``workload_key``; the report.  With
    ``keep``, perf's data file is copied there (for ``perf report -i``)."""
    kind = ALL_KINDS[proxy]
    why = kind.missing()
    if why:
        raise SystemExit(f"benchmarks.profile: {proxy}: {why}")
    workload = next(w for w in RATE_WORKLOADS if w.key == workload_key)
    with work_directory() as work:
        setting = start_setting(work)
        upstream, ca_cert = setting.upstream, setting.pki.ca_cert
        target = Target(proxy)
        try:
            proc = target.processes[workload.mode] = kind.start(workload.mode, setting)
            pid = proc.proc.pid
            # A short unsampled run first: connections pooled, code paths warm.
            measure_rate(workload, target, upstream, ca_cert, min(2.0, duration))
            time.sleep(1.0)
            recorder = record(pid, work / "perf.data", frequency)
            time.sleep(0.5)  # perf attached
            cpu_before = cpu_seconds([pid])
            sample = measure_rate(workload, target, upstream, ca_cert, duration)
            cpu = cpu_seconds([pid]) - cpu_before
            stop_recording(recorder)
        finally:
            for running in target.processes.values():
                running.stop()
            upstream.stop()
        if sample.failed or not sample.ok:
            raise SystemExit(
                f"benchmarks.profile: {sample.failed} failed, {sample.ok} ok: {sample.errors[:2]}"
            )
        prof = Profile.of(stacks_of(work / "perf.data"))
        if keep is not None:
            shutil.copyfile(work / "perf.data", keep)
    if not prof.samples:
        raise SystemExit("benchmarks.profile: perf recorded no samples of the proxy")
    us_per_sample = cpu / sample.ok / prof.samples * 1e6
    unit = "MB" if workload.unit == "MB/s" else "request"
    per = sample.ok if unit == "request" else sample.bytes / 1e6
    return "\n".join(
        [
            f"{proxy}, {workload.title}: {sample.ok:,} responses in {sample.elapsed:.1f} s "
            f"({sample.rate:,.0f}/s while sampled), proxy CPU {cpu:.2f} s = "
            f"{cpu / per * 1e6:,.1f} µs per {unit}; {prof.samples:,} samples",
            "",
            prof.table(top, us_per_sample if unit == "request" else None),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--proxy", choices=sorted(ALL_KINDS), default="tlsgate")
    parser.add_argument("--workload", choices=[w.key for w in RATE_WORKLOADS], default="keepalive8")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds sampled (8)")
    parser.add_argument("--frequency", type=int, default=499, help="samples per second (499)")
    parser.add_argument("--top", type=int, default=40, help="owners shown (40)")
    parser.add_argument("--keep", type=Path, help="copy perf's data file here")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.frequency <= 0 or args.top <= 0:
        parser.error("--duration, --frequency and --top must be positive")
    if shutil.which("perf") is None:
        sys.exit("benchmarks.profile: perf not found: apt-get install linux-perf")
    try:
        report = profile(
            args.proxy, args.workload, args.duration, args.frequency, args.top, args.keep
        )
    except (PeerError, OSError) as exc:
        sys.exit(f"benchmarks.profile: {exc}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
