"""Turning results into markdown: the tables, and the generated part of BENCHMARKS.md.

Cells show the value and its ratio to Squid in the same run (``8,512 (1.00x)``); only
same-run ratios mean anything on a shared 2-core machine. BENCHMARKS.md is written by
hand except between ``<!-- results:start -->`` and ``<!-- results:end -->``; the
summary line of the run it replaces moves to the list between ``<!-- history:start
-->`` and ``<!-- history:end -->``, so the file shows what changed since the last run.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.load import Sample
from benchmarks.workloads import DIRECT, RATE_WORKLOADS, MemorySample, RateWorkload

if TYPE_CHECKING:
    from benchmarks.run import Results

BASE = "squid"
NAMES = {"squid": "Squid", "mitmproxy": "mitmproxy", "proxy.py": "proxy.py",
         "tlsgate": "tlsgate", DIRECT: "direct"}  # fmt: skip
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
HISTORY_START, HISTORY_END = "<!-- history:start -->", "<!-- history:end -->"
TIMES, NONE = "\u00d7", "\u2013"  # the ratio sign and the empty cell: "x" and "-" read worse
SUMMARY = re.compile(r"<!-- summary: (.*?) -->")


def _value(workload: RateWorkload, sample: Sample) -> float:
    return sample.rate if workload.unit == "req/s" else sample.mbps


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(value: float, base: float | None) -> str:
    return f" ({value / base:.2f}{TIMES})" if base else ""


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(results: Results) -> list[str]:
    names = [NAMES.get(t, t) for t in results.targets]
    return [_row(["workload", *names]), _row(["---", *["---:"] * len(names)])]


def rate_table(results: Results) -> list[str]:
    lines = _header(results)
    for workload in RATE_WORKLOADS:
        if workload.key not in results.rates:
            continue
        base_sample = results.best(workload.key, BASE)
        base = _value(workload, base_sample) if base_sample else None
        cells, lat = [], []
        for target in results.targets:
            sample = results.best(workload.key, target)
            if sample is None:
                cells.append(NONE)
                lat.append(NONE)
                continue
            value = _value(workload, sample)
            cell = _num(value) + _ratio(value, base) if sample.ok else "none finished in time"
            failed = results.failures(workload.key, target)
            if failed:
                cell += f" **{failed} failed**"
            cells.append(cell)
            lat.append(f"{sample.percentile_ms(50):.2f} / {sample.percentile_ms(99):.2f}")
        lines.append(_row([f"{workload.title} ({workload.unit})", *cells]))
        if workload.latency:
            lines.append(_row(["  … latency p50 / p99 (ms)", *lat]))
    for mode, label in (("inspect", "inspected"), ("tunnel", "tunnelled")):
        per_proxy = results.memory.get(mode, {})
        counts = sorted({c for by_count in per_proxy.values() for c in by_count})
        for count in counts:
            base_mem = per_proxy.get(BASE, {}).get(count)
            cells = []
            for target in results.targets:
                m = per_proxy.get(target, {}).get(count)
                cells.append(NONE if m is None else _memory_cell(m, base_mem))
            lines.append(
                _row([f"6. memory per idle {label} connection, {count:,} open (KiB)", *cells])
            )
    return lines


def _memory_cell(m: MemorySample, base: MemorySample | None) -> str:
    cell = _num(m.kib_per_connection)
    if base is not None and base.kib_per_connection > 0:
        cell += _ratio(m.kib_per_connection, base.kib_per_connection)
    if m.opened < m.wanted:
        cell += f" (only {m.opened:,} opened{' in time' if m.timed_out else ''})"
    if m.failed:
        cell += f" **{m.failed} failed**"
    return cell


def cpu_table(results: Results) -> list[str]:
    """CPU seconds of proxy / nginx / load generator in the best round, and the proxy's CPU per
    unit of work (µs per request, ms per MB)."""
    lines = _header(results)
    for workload in RATE_WORKLOADS:
        if workload.key not in results.rates:
            continue
        cells = []
        for target in results.targets:
            s = results.best(workload.key, target)
            if s is None:
                cells.append(NONE)
                continue
            proxy = s.cpu.get("proxy")
            used = (proxy, s.cpu.get("nginx"), s.cpu["generator"])
            cell = " / ".join(NONE if v is None else f"{v:.1f}" for v in used)
            if proxy is not None and s.ok:
                if workload.unit == "req/s":
                    cell += f" · {proxy / s.ok * 1e6:,.0f} µs/req"
                elif s.bytes:
                    cell += f" · {proxy / (s.bytes / 1e6) * 1e3:.2f} ms/MB"
            cells.append(cell)
        lines.append(_row([workload.title, *cells]))
    return lines


NOLOG = "tlsgate-nolog"
PURE = "tlsgate-pure"
ASYNCIO = "tlsgate-asyncio"
STOCK_MALLOC = "tlsgate-stockmalloc"
RELAY = "relay-raw"
KEEPALIVE = (("keepalive8", "keep-alive 8"), ("keepalive64", "keep-alive 64"))


def paired_ratio(results: Results, a: str, b: str, key: str = "keepalive8") -> float | None:
    """``a``'s rate over ``b``'s in ``key``, as the median over rounds of the two cells
    of the same round (measured next to each other, so a slow minute of the machine
    weighs on both; best rounds of different minutes do not pair)."""
    first = results.rates.get(key, {}).get(a, [])
    second = results.rates.get(key, {}).get(b, [])
    ratios = [x.rate / y.rate for x, y in zip(first, second, strict=False) if y.rate]
    return statistics.median(ratios) if ratios else None


def log_cost(results: Results, key: str = "keepalive8") -> float | None:
    """What the Web Proxy log costs, in % of ``key``'s rate: tlsgate against the same
    proxy with ``[log] enabled = false`` (:func:`paired_ratio`)."""
    ratio = paired_ratio(results, "tlsgate", NOLOG, key)
    return None if ratio is None else (1 - ratio) * 100


def summary(results: Results) -> str:
    """One line: tlsgate against Squid (and the tunnel against direct) in this run."""
    parts = []

    def ratio(key: str, other: str, who: str = "tlsgate") -> str | None:
        w = next(w for w in RATE_WORKLOADS if w.key == key)
        a, b = results.best(key, who), results.best(key, other)
        if a is None or b is None or not _value(w, b):
            return None
        return f"{_value(w, a) / _value(w, b):.2f}{TIMES}"

    for key, label in (*KEEPALIVE, ("newconn", "new connection"), ("bulk", "inspected MB/s")):
        r = ratio(key, BASE)
        if r:
            parts.append(f"{label} {r}")
    text = "tlsgate vs Squid: " + ", ".join(parts) if parts else "tlsgate"
    r = ratio("tunnel", DIRECT)
    if r:
        text += f"; tunnel {r} direct"
    relay = [f"{label} {r}" for key, label in KEEPALIVE
             if (r := ratio(key, BASE, RELAY))]  # fmt: skip
    if relay:
        text += f"; the featureless relay ({RELAY}) vs Squid: {', '.join(relay)}"
    cost = log_cost(results)
    if cost is not None:
        text += f"; Web Proxy log costs {cost:.1f} % of keep-alive 8 (median of rounds)"
    gains = (
        (PURE, "compiled", "pure Python", "keepalive8", "keep-alive 8"),
        (ASYNCIO, "uvloop", "asyncio's loop", "keepalive8", "keep-alive 8"),
        (STOCK_MALLOC, "malloc tuned", "glibc's defaults", "bulk", "inspected MB/s"),
    )
    for other, this, that, key, label in gains:
        gain = paired_ratio(results, "tlsgate", other, key)
        if gain is not None:
            text += f"; {this} {gain:.2f}{TIMES} {that} in {label} (median of rounds)"
    for mode, label in (("inspect", "idle inspected"), ("tunnel", "idle tunnel")):
        by_count = results.memory.get(mode, {}).get("tlsgate", {})
        if by_count:
            count = max(by_count)
            text += f"; {label} {by_count[count].kib_per_connection:.0f} KiB ({count:,} open)"
    return f"{results.date}: {text}"


def render_markdown(results: Results) -> str:
    opts = results.options
    versions = "; ".join(f"{NAMES.get(k, k)}: {v}" for k, v in results.versions.items())
    failures = results.total_failures()
    lines = [
        f"### Run of {results.date}",
        "",
        f"- Machine: {results.machine}",
        f"- Versions: {versions}",
        f"- Method: {opts['rounds']} interleaved round(s) of {opts['duration']} s per cell, "
        f"best round shown; memory cells with {', '.join(f'{c:,}' for c in opts['memory_counts'])}"  # type: ignore[attr-defined]
        f" idle connections, a fresh proxy process each; whole run {results.seconds / 60:.1f} min.",
        f"- Failed responses (wrong status or size, or errors) over all rounds: {failures}.",
        "",
        "Value (ratio to Squid, same run). Rates: higher is better; latency and memory:"
        " lower is better.",
        "",
        *rate_table(results),
        *_cpu_section(results),
        "",
        f"<!-- summary: {summary(results)} -->",
    ]
    return "\n".join(lines) + "\n"


def _cpu_section(results: Results) -> list[str]:
    if not results.rates:
        return []
    return [
        "",
        "CPU seconds used during the best round of each cell: proxy / nginx / load generator"
        " (· the proxy's CPU per request or per MB).",
        "",
        *cpu_table(results),
    ]


TEMPLATE = f"""# Benchmarks

{RESULTS_START}
{RESULTS_END}

## Previous runs

{HISTORY_START}
{HISTORY_END}

## Notes
"""


def update_benchmarks_md(path: Path, results: Results) -> None:
    """Replace the generated results in ``path`` (made from a template if missing) and
    move the summary of the run they replace into the history list."""
    text = path.read_text() if path.exists() else TEMPLATE
    if RESULTS_START not in text or RESULTS_END not in text:
        text += f"\n## Latest results\n\n{RESULTS_START}\n{RESULTS_END}\n"
    if HISTORY_START not in text or HISTORY_END not in text:
        text += f"\n## Previous runs\n\n{HISTORY_START}\n{HISTORY_END}\n"
    head, _, rest = text.partition(RESULTS_START)
    old, _, tail = rest.partition(RESULTS_END)
    text = f"{head}{RESULTS_START}\n{render_markdown(results)}{RESULTS_END}{tail}"
    found = SUMMARY.search(old)
    if found:
        head, _, rest = text.partition(HISTORY_START)
        text = f"{head}{HISTORY_START}\n- {found.group(1)}{rest}"
    path.write_text(text)
