"""The benchmark command: ``python -m benchmarks.run [--quick] [--rounds N] ...``.

Starts nginx, the proxies (inspect and tunnel processes each) and measures every
workload per proxy and directly, in interleaved rounds (the order of targets rotates
each round; the best round counts), then the idle-connection memory with a fresh
proxy process per cell. Prints a markdown table, writes it to
``benchmarks/results/<date>.md`` (and the raw numbers to ``<date>.json``) and, with
``--write-benchmarks-md``, into BENCHMARKS.md. ``scripts/bench.sh`` installs the peers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.peers.pki import TestPKI

from benchmarks.load import Sample, run_curl
from benchmarks.peers import (
    ALL_KINDS,
    EXTRA_KINDS,
    KINDS,
    Mode,
    PeerError,
    ProxyProcess,
    Setting,
    start_upstream,
    upstream_url,
)
from benchmarks.report import render_markdown, update_benchmarks_md
from benchmarks.system import command_version, cpu_seconds, machine_description, raise_nofile
from benchmarks.workloads import (
    ALL_KEYS,
    DIRECT,
    MEMORY_KEY,
    RATE_WORKLOADS,
    MemorySample,
    RateWorkload,
    Target,
    measure_memory,
    measure_rate,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
NOFILE_WANTED = 140_000


# -- tlsgate's configuration: the one place the harness sets it -------------------------


def tlsgate_config_text(connect_ports: list[int]) -> str:
    """tlsgate.toml for the benchmark: the default policy, but CONNECT may reach the
    benchmark's nginx port (the default allows 443 only) and idle connections stay
    open while the memory workload opens 10,000 (the others get the same)."""
    from tlsgate.config.model import AccessRule, TlsgateConfig

    text = "[timeouts]\nclient_idle = 900.0\n"
    if "connect_ports" in AccessRule.model_fields and "rules" in TlsgateConfig.model_fields:
        ports = ", ".join(str(p) for p in connect_ports)
        text += f"""
[[rules]]
name = "Benchmark"
action = "allow"
sources = ["Internal"]
destinations = ["any"]
protocols = ["http", "https"]
connect_ports = [{ports}]
"""
    return text


@dataclass
class Options:
    proxies: list[str] = field(default_factory=lambda: list(KINDS))
    workloads: list[str] = field(default_factory=lambda: list(ALL_KEYS))
    duration: float = 6.0
    rounds: int = 3
    memory_counts: list[int] = field(default_factory=lambda: [1000, 10000])
    memory_deadline: float = 150.0
    workdir: Path | None = None
    """Keep the peers' files here (default: a temporary directory, removed)."""
    progress: bool = True
    tlsgate_extra: str = ""
    """More tlsgate.toml, appended (e.g. ``[log]\nenabled = false`` to measure a lever)."""


@dataclass
class Results:
    date: str
    machine: str
    versions: dict[str, str]
    options: dict[str, object]
    rates: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    """workload key → target name → one sample per round."""
    memory: dict[str, dict[str, dict[int, MemorySample]]] = field(default_factory=dict)
    """mode → proxy name → connection count → sample."""
    targets: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def best(self, key: str, target: str) -> Sample | None:
        samples = self.rates.get(key, {}).get(target, [])
        return max(samples, key=lambda s: s.rate) if samples else None

    def failures(self, key: str, target: str) -> int:
        return sum(s.failed for s in self.rates.get(key, {}).get(target, []))

    def total_failures(self) -> int:
        rate = sum(s.failed for t in self.rates.values() for ss in t.values() for s in ss)
        mem = sum(m.failed for t in self.memory.values() for c in t.values() for m in c.values())
        return rate + mem


def _say(options: Options, text: str) -> None:
    if options.progress:
        print(text, file=sys.stderr, flush=True)


def versions(proxies: list[str]) -> dict[str, str]:
    out = {name: ALL_KINDS[name].version() for name in proxies}
    out["nginx"] = command_version(["nginx", "-v"], line_with="nginx")
    out["curl"] = command_version(["curl", "--version"], line_with="curl")
    return out


@contextlib.contextmanager
def work_directory(keep: Path | None = None) -> Iterator[Path]:
    """Where the peers keep their files: ``keep``, or a temporary directory, removed."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="tlsgate-bench-"))
    path.chmod(0o755)  # Squid drops root to user "proxy", which must reach its directory
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_setting(work: Path, tlsgate_extra: str = "") -> Setting:
    """The test CA and nginx started in ``work``, and tlsgate's config writer (its
    config text plus ``tlsgate_extra``); the caller stops ``setting.upstream``."""
    pki = TestPKI(work / "pki")
    upstream = start_upstream(work / "nginx", pki)
    tls_port = upstream.port("tls")

    def tlsgate_config(directory: Path) -> Path:
        path = directory / "tlsgate.toml"
        path.write_text(tlsgate_config_text([tls_port]) + tlsgate_extra)
        return path

    return Setting(pki=pki, upstream=upstream, workdir=work, tlsgate_config=tlsgate_config)


def _check_target(target: Target, setting: Setting, modes: set[Mode]) -> None:
    """One request per mode before measuring, so a broken proxy fails loudly here and
    its one-off work (minting the leaf, starting helpers) stays out of the numbers."""
    for mode in sorted(modes):
        proc = target.processes[mode]
        sample = run_curl(
            upstream_url(setting.upstream, "tls", "/1k.bin"),
            cacert=proc.client_ca,
            expect_size=1024,
            parallel=1,
            duration=1.0,
            proxy=proc.url,
        )
        if sample.ok == 0 or sample.failed > 1:  # the early-exit line counts one
            raise PeerError(
                f"{target.name} ({mode}) does not proxy HTTPS: {sample.errors[:3]}\n{proc.tail()}"
            )


def memory_counts(wanted: list[int], limit: int, options: Options) -> list[int]:
    """``wanted``, each capped to what the file-descriptor limit allows.

    A proxy holds two descriptors per idle connection (client and upstream) plus its
    own (Squid keeps ~100 in reserve). Where the hard limit cannot be raised (a
    sandbox here: 20,000, even for root) 10,000 connections do not fit; the table
    then names the count that was measured instead.
    """
    cap = max(((limit - 300) // 2) // 100 * 100, 10)
    counts = []
    for n in wanted:
        if n > cap:
            _say(options, f"memory: {n:,} connections need {2 * n + 300:,} descriptors, the "
                          f"limit is {limit:,}: measuring {cap:,} instead")
            n = cap
        if n > 0 and n not in counts:
            counts.append(n)
    return counts


def run_benchmark(options: Options) -> Results:
    """Start everything, measure, stop everything; return the numbers."""
    rate_workloads = [w for w in RATE_WORKLOADS if w.key in options.workloads]
    rates = [w.key for w in rate_workloads]
    for name in options.proxies:
        if name not in ALL_KINDS:
            raise PeerError(f"unknown proxy {name!r}; choose from {', '.join(ALL_KINDS)}")
        kind = ALL_KINDS[name]
        why = kind.missing()
        if why:
            raise PeerError(f"{name}: {why}")
        if rates and not any(_takes(name, key) for key in rates):
            raise PeerError(
                f"{name} cannot run workload {', '.join(rates)}; use --workloads "
                f"{','.join(sorted(kind.workloads or ()))} with it"
            )
    limit = raise_nofile(NOFILE_WANTED)
    counts = memory_counts(options.memory_counts, limit, options)
    started = time.monotonic()
    results = Results(
        date=dt.date.today().isoformat(),
        machine=machine_description(),
        versions=versions(options.proxies),
        options={
            "duration": options.duration,
            "rounds": options.rounds,
            "memory_counts": counts,
            "workloads": options.workloads,
        },
        targets=[*options.proxies, DIRECT],
    )
    with work_directory(options.workdir) as work:
        setting = start_setting(work, options.tlsgate_extra)
        upstream = setting.upstream
        targets: list[Target] = []
        try:
            for name in options.proxies:
                target = Target(name)
                targets.append(target)
                own = {w.mode for w in rate_workloads if _takes(name, w.key)}
                for mode in sorted(own):
                    _say(options, f"starting {name} ({mode})")
                    target.processes[mode] = ALL_KINDS[name].start(mode, setting)
                _check_target(target, setting, own)
            targets.append(Target(DIRECT))
            _measure_rates(options, results, targets, setting, rate_workloads)
        finally:
            for target in targets:
                for proc in target.processes.values():
                    proc.stop()
        try:
            if MEMORY_KEY in options.workloads:
                _measure_memory(options, results, setting, counts)
        finally:
            upstream.stop()
    results.seconds = time.monotonic() - started
    return results


def _measure_rates(
    options: Options,
    results: Results,
    targets: list[Target],
    setting: Setting,
    workloads: list[RateWorkload],
) -> None:
    for round_no in range(options.rounds):
        for workload in workloads:
            # Rotate who goes first each round: drift in the machine's state (page
            # cache, CPU frequency, other tenants) then spreads over all targets.
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                if not _takes(target.name, workload.key):
                    continue  # its cell stays empty (relay-raw: keep-alive only)
                _settle(targets)
                sample = measure_rate(
                    workload, target, setting.upstream, setting.pki.ca_cert, options.duration
                )
                results.rates.setdefault(workload.key, {}).setdefault(target.name, []).append(
                    sample
                )
                value = sample.rate if workload.unit == "req/s" else sample.mbps
                _say(
                    options,
                    f"round {round_no + 1}/{options.rounds} {workload.key:<11} "
                    f"{target.name:<10} {value:>10,.1f} {workload.unit}"
                    + (f"  {sample.failed} FAILED {sample.errors[:2]}" if sample.failed else ""),
                )


def _takes(name: str, workload: str) -> bool:
    """Whether target ``name`` runs rate workload ``workload`` (direct runs them all)."""
    kind = ALL_KINDS.get(name)
    return kind is None or kind.workloads is None or workload in kind.workloads


SETTLE_CPU = 0.05
"""A proxy is quiet when its processes use less than this share of a core."""
SETTLE_DEADLINE = 30.0


def _settle(targets: list[Target]) -> None:
    """Wait until no proxy is still busy with the last cell: tlsgate's log daemon
    indexes its spool, Squid's log daemon writes, Python peers collect garbage.  That
    work would otherwise land in the next cell, which may be another proxy's; it is
    counted in neither, which the sustained-load rows of BENCHMARKS.md account for."""
    deadline = time.monotonic() + SETTLE_DEADLINE
    window = 0.3
    while time.monotonic() < deadline:
        pids = [pid for t in targets for proc in t.processes.values() for pid in proc.pids()]
        before = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - before < SETTLE_CPU * window:
            return


def _measure_memory(
    options: Options, results: Results, setting: Setting, counts: list[int]
) -> None:
    for name in (p for p in options.proxies if ALL_KINDS[p].memory):
        modes: tuple[Mode, ...] = ("inspect", "tunnel")
        for mode in modes:
            for count in counts:
                _say(options, f"memory: {name} ({mode}), {count:,} idle connections")
                proc: ProxyProcess = ALL_KINDS[name].start(mode, setting)
                try:
                    sample = measure_memory(
                        proc, setting.upstream, count, deadline=options.memory_deadline
                    )
                finally:
                    proc.stop()
                results.memory.setdefault(mode, {}).setdefault(name, {})[count] = sample
                _say(
                    options,
                    f"  {sample.opened:,} open in {sample.seconds:.1f} s: "
                    f"{sample.kib_per_connection:.1f} KiB each"
                    + (f", {sample.failed} FAILED {sample.errors[:2]}" if sample.failed else ""),
                )


def write_results(results: Results, directory: Path = RESULTS_DIR) -> Path:
    """``<date>.md`` (the tables) and ``<date>.json`` (every sample) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / f"{results.date}.md"
    md.write_text(render_markdown(results))
    raw = asdict(results)
    (directory / f"{results.date}.json").write_text(json.dumps(raw, indent=1, default=str))
    return md


def _csv(kind: type, text: str) -> list:  # type: ignore[type-arg]
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="tlsgate side by side with Squid, mitmproxy and proxy.py (see BENCHMARKS.md).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="~1 s per cell, 1 round, memory with 100 and 1,000 connections")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per cell and round (default 6)")
    parser.add_argument("--proxies", default=",".join(KINDS),
                        help=f"comma list from {','.join(ALL_KINDS)} (default: all but "
                             f"{','.join(EXTRA_KINDS)})")
    parser.add_argument("--workloads", default=",".join(ALL_KEYS),
                        help=f"comma list from {','.join(ALL_KEYS)} (default all)")
    parser.add_argument("--memory-counts", default=None,
                        help="idle connections per memory cell (default 1000,10000)")
    parser.add_argument("--memory-deadline", type=float, default=150.0,
                        help="seconds to open one memory cell's connections (default 150)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs and logs of the peers here")
    parser.add_argument("--write-benchmarks-md", action="store_true",
                        help="put the results into BENCHMARKS.md")
    parser.add_argument("--tlsgate-extra", default="", metavar="TOML",
                        help="more tlsgate.toml for tlsgate, e.g. '[log]\\nenabled = false' "
                        "(\\n becomes a new line)")
    parser.add_argument("--no-results-file", action="store_true",
                        help="do not write benchmarks/results/<date>.md")
    args = parser.parse_args(argv)
    workloads = _csv(str, args.workloads)
    unknown = [w for w in workloads if w not in ALL_KEYS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(ALL_KEYS)}")
    if args.memory_counts:
        counts = _csv(int, args.memory_counts)
    else:
        counts = [100, 1000] if args.quick else [1000, 10000]
    options = Options(
        proxies=_csv(str, args.proxies),
        workloads=workloads,
        duration=args.duration or (1.0 if args.quick else 6.0),
        rounds=args.rounds or (1 if args.quick else 3),
        memory_counts=counts,
        memory_deadline=args.memory_deadline,
        workdir=args.workdir,
        tlsgate_extra=args.tlsgate_extra.replace("\\n", "\n"),
    )
    return options, args


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    try:
        results = run_benchmark(options)
    except (PeerError, subprocess.CalledProcessError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 1
    text = render_markdown(results)
    print(text)
    if not args.no_results_file:
        print(f"written: {write_results(results)}", file=sys.stderr)
    if args.write_benchmarks_md:
        update_benchmarks_md(BENCHMARKS_MD, results)
        print(f"updated: {BENCHMARKS_MD}", file=sys.stderr)
    return 0 if results.total_failures() == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
