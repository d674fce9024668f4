"""The benchmark harness still works: every workload briefly through tlsgate and direct.

No timing assertions: these tests check that each workload runs, that every response
is checked (a wrong size counts as a failure) and that the report is written. Squid,
mitmproxy and proxy.py are for ``scripts/bench.sh`` only and are not needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.load import Sample, run_curl, run_newconn
from benchmarks.report import (
    ASYNCIO,
    HISTORY_START,
    NOLOG,
    PURE,
    STOCK_MALLOC,
    log_cost,
    paired_ratio,
    render_markdown,
    summary,
    update_benchmarks_md,
)
from benchmarks.run import Options, Results, run_benchmark, tlsgate_config_text
from benchmarks.workloads import DIRECT, RATE_KEYS

from tests.peers.nginx import NginxServer
from tests.peers.pki import TestPKI
from tlsgate import build

MEMORY_COUNT = 20

# The first test's setup runs every workload through five tlsgate builds and direct:
# 119.7 s measured on a fresh 2-core machine, against the suite's 120 s per test.
pytestmark = pytest.mark.timeout(360)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def results(bench_dir: Path) -> Results:
    options = Options(
        proxies=["tlsgate", NOLOG, PURE, ASYNCIO, STOCK_MALLOC],
        duration=1.5,
        rounds=1,
        memory_counts=[MEMORY_COUNT],
        workdir=bench_dir,
        progress=False,
    )
    return run_benchmark(options)


@pytest.mark.parametrize("target", ["tlsgate", NOLOG, PURE, ASYNCIO, STOCK_MALLOC, DIRECT])
@pytest.mark.parametrize("workload", RATE_KEYS)
def test_workload_completes_checked_responses(results: Results, workload: str, target: str) -> None:
    [sample] = results.rates[workload][target]
    assert sample.failed == 0, sample.errors
    assert sample.ok > 0
    assert sample.elapsed > 0
    assert sample.cpu["generator"] > 0
    if target != DIRECT:
        assert sample.cpu["proxy"] > 0


def test_new_connection_workload_opens_one_connection_per_request(results: Results) -> None:
    [sample] = results.rates["newconn"]["tlsgate"]
    assert sample.new_connections == sample.ok + sample.failed


def test_keepalive_workload_reuses_connections(results: Results) -> None:
    [sample] = results.rates["keepalive8"]["tlsgate"]
    assert 0 < sample.new_connections <= 8 < sample.ok


@pytest.mark.parametrize("mode", ["inspect", "tunnel"])
def test_memory_workload_holds_every_connection(results: Results, mode: str) -> None:
    sample = results.memory[mode]["tlsgate"][MEMORY_COUNT]
    assert sample.failed == 0, sample.errors
    assert sample.opened == MEMORY_COUNT
    assert sample.loaded_kib > 0


def test_the_log_is_measured_on_and_off(results: Results, bench_dir: Path) -> None:
    """``tlsgate-nolog`` is tlsgate with its Web Proxy log off, in the same run: its
    requests leave no record, tlsgate's do, and the summary gives the log's cost."""
    from tlsgate.log.database import SqliteLogSink

    def logged(name: str) -> int:
        db = SqliteLogSink(bench_dir / f"{name}-inspect-0" / "home" / "log.db")
        try:
            return db.count()
        finally:
            db.close()

    [on] = results.rates["keepalive8"]["tlsgate"]
    assert logged("tlsgate") >= on.ok > 0
    assert logged(NOLOG) == 0
    cost = log_cost(results)
    assert cost is not None and f"Web Proxy log costs {cost:.1f} %" in summary(results)
    assert NOLOG not in results.memory["inspect"]  # an idle connection has no record


def test_pure_runs_the_same_sources_uncompiled(results: Results) -> None:
    """``tlsgate-pure`` runs as pure Python; tlsgate as installed (compiled when
    scripts/test.sh built it so); the summary gives the gain."""
    assert "(pure Python," in results.versions[PURE]
    if build.compiled():
        assert "(compiled with mypyc," in results.versions["tlsgate"]
    gain = paired_ratio(results, "tlsgate", PURE)
    assert gain is not None and f"compiled {gain:.2f}" in summary(results)
    assert PURE not in results.memory["inspect"]


def test_asyncio_runs_on_asyncios_own_loop(results: Results) -> None:
    """``tlsgate-asyncio`` runs on asyncio's loop, tlsgate on uvloop; the summary gives
    what the loop in C gains."""
    assert ", asyncio event loop," in results.versions[ASYNCIO]
    assert ", uvloop " in results.versions["tlsgate"]
    gain = paired_ratio(results, "tlsgate", ASYNCIO)
    assert gain is not None and f"uvloop {gain:.2f}" in summary(results)
    assert ASYNCIO not in results.memory["inspect"]


def test_stock_malloc_leaves_glibc_as_it_is(results: Results) -> None:
    """``tlsgate-stockmalloc`` runs with ``--malloc default``, tlsgate with its tuned
    allocator; the summary gives what tuning gains in inspected bulk."""
    assert ", glibc malloc as is," in results.versions[STOCK_MALLOC]
    assert ", glibc malloc tuned," in results.versions["tlsgate"]
    gain = paired_ratio(results, "tlsgate", STOCK_MALLOC, "bulk")
    assert gain is not None and f"malloc tuned {gain:.2f}" in summary(results)
    assert STOCK_MALLOC not in results.memory["inspect"]


def test_report_and_benchmarks_md(results: Results, tmp_path: Path) -> None:
    text = render_markdown(results)
    header = f"| workload | tlsgate | {NOLOG} | {PURE} | {ASYNCIO} | {STOCK_MALLOC} | direct |"
    assert header in text
    assert "keep-alive inspected HTTPS" in text
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nhand-written intro\n")
    update_benchmarks_md(md, results)
    update_benchmarks_md(md, results)
    out = md.read_text()
    assert out.startswith("# Benchmarks\n\nhand-written intro\n")
    assert out.count("### Run of") == 1
    # The replaced run's summary moved to the history list.
    history = out.split(HISTORY_START, 1)[1]
    assert history.lstrip().startswith(f"- {results.date}: tlsgate")


def test_tlsgate_config_allows_the_benchmark_port() -> None:
    import tomllib

    from tlsgate.config.loader import parse_config

    text = tlsgate_config_text([12345])
    config = parse_config(tomllib.loads(text), source="bench", text=text)
    assert config.timeouts.client_idle >= 900
    rules = getattr(config, "rules", [])
    if rules:
        assert any(12345 in rule.connect_ports for rule in rules)


def test_wrong_size_counts_as_failure(nginx: NginxServer) -> None:
    sample = run_curl(nginx.url("plain", "/1k.bin"), cacert=None, expect_size=1000,
                      parallel=2, duration=0.5)  # fmt: skip
    assert sample.ok == 0
    assert sample.failed > 0
    assert "want 200, 1000" in sample.errors[0]


def test_new_connection_client_checks_responses(nginx: NginxServer, pki: TestPKI) -> None:
    block = nginx.block("tls")
    good = run_newconn((block.host, block.port), "/1k.bin", cacert=pki.ca_cert,
                       expect_size=1024, parallel=2, duration=0.3)  # fmt: skip
    assert good.ok > 0 and good.failed == 0, good.errors
    bad = run_newconn((block.host, block.port), "/status/404", cacert=pki.ca_cert,
                      expect_size=1024, parallel=2, duration=0.3)  # fmt: skip
    assert bad.ok == 0 and bad.failed > 0


@pytest.mark.parametrize("extra", [[], ["--plain", "--log", "daemon"]])
def test_cpu_per_request_tool_runs_and_checks_responses(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.cpu_per_request import main

    assert main(["--requests", "200", "--rounds", "2", *extra]) == 0
    out = capsys.readouterr().out
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2 and all(line.endswith(", 0 failed") for line in rounds), out
    assert "best: " in out


def test_cpu_per_mb_tool_runs_and_checks_responses(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cpu_per_mb import main

    # --malloc default: "tuned" would set this test process's allocator for good.
    assert main(["--requests", "4", "--rounds", "2", "--malloc", "default"]) == 0
    out = capsys.readouterr().out
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(rounds) == 2 and all(line.endswith(", 0 failed") for line in rounds), out
    assert all("page faults per MB" in line for line in rounds), out
    assert "best: " in out and "malloc default" in out


def test_floor_tool_measures_every_stage_and_checks_responses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.floor import STAGES, main

    assert main(["--requests", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and " us |" in line]
    assert [row.split(" | ")[0][2:] for row in rows] == list(STAGES), out
    assert all(row.endswith("| 0 |") for row in rows), out


def test_floor_tool_refuses_an_unknown_stage(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.floor import main

    with pytest.raises(SystemExit) as exc:
        main(["--stages", "raw,nope"])
    assert exc.value.code == 2
    assert "unknown stage nope" in capsys.readouterr().err


def _beside_tlsgate(proxy: str, workdir: Path) -> tuple[Results, Sample]:
    """One short keep-alive 8 cell of ``proxy`` beside tlsgate; its sample, checked to
    have answered every request."""
    options = Options(
        proxies=["tlsgate", proxy],
        workloads=["keepalive8"],
        duration=1.0,
        rounds=1,
        workdir=workdir,
        progress=False,
    )
    results = run_benchmark(options)
    [sample] = results.rates["keepalive8"][proxy]
    assert sample.failed == 0, sample.errors
    assert sample.ok > 0
    return results, sample


def test_floor_relay_runs_beside_tlsgate_as_a_measuring_stick(tmp_path: Path) -> None:
    """relay-raw: the floor's raw relay as a proxy process in the same run (keep-alive
    workloads), every response checked, among the default proxies, and named in the
    summary line beside tlsgate's ratios."""
    from benchmarks.peers import KINDS
    from benchmarks.report import RELAY

    assert RELAY in KINDS
    results, sample = _beside_tlsgate(RELAY, tmp_path)
    assert sample.cpu["proxy"] > 0
    assert "benchmarks.floor raw stage" in results.versions[RELAY]
    assert RELAY in render_markdown(results)
    assert f"the featureless relay ({RELAY}) vs Squid" not in summary(results)  # no Squid
    results.rates["keepalive8"]["squid"] = [sample]
    line = summary(results)
    assert f"; the featureless relay ({RELAY}) vs Squid: keep-alive 8 1.00\u00d7" in line


def test_floor_relay_leaves_cells_of_workloads_it_cannot_serve_empty(tmp_path: Path) -> None:
    """A run of every workload takes relay-raw by default: it runs the keep-alive cells
    and leaves the others empty (no tunnel mode is started for it); named with only
    workloads it cannot serve, it is refused with the ones it takes."""
    from benchmarks.peers import PeerError
    from benchmarks.report import NONE, RELAY, rate_table

    options = Options(
        proxies=[RELAY],
        workloads=["keepalive8", "tunnel"],
        duration=1.0,
        rounds=1,
        workdir=tmp_path / "both",
        progress=False,
    )
    results = run_benchmark(options)
    assert [s.failed for s in results.rates["keepalive8"][RELAY]] == [0]
    assert RELAY not in results.rates["tunnel"]
    assert results.rates["tunnel"][DIRECT][0].ok > 0
    [tunnel_row] = [line for line in rate_table(results) if line.startswith("| 4. ")]
    assert tunnel_row.split(" | ")[1] == NONE  # relay-raw's cell; direct's follows

    options = Options(proxies=[RELAY], workloads=["tunnel"], workdir=tmp_path, progress=False)
    with pytest.raises(PeerError, match="relay-raw cannot run workload tunnel; use --workloads"):
        run_benchmark(options)


def test_alt_python_runs_tlsgate_on_another_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tlsgate-altpython`` runs tlsgate on the interpreter TLSGATE_BENCH_ALT_PYTHON
    names (scripts/bench.sh: the python3 on PATH when the harness runs on another), and
    each row's version names its interpreter; without the variable it says what is
    missing instead of measuring."""
    import sys

    from benchmarks.peers import ALL_KINDS, ALT_PYTHON

    monkeypatch.delenv(ALT_PYTHON, raising=False)
    alt = ALL_KINDS["tlsgate-altpython"]
    assert alt.missing() == f"{ALT_PYTHON} is not set (scripts/bench.sh sets it)"
    monkeypatch.setenv(ALT_PYTHON, sys.executable)
    assert alt.missing() is None
    results, _ = _beside_tlsgate("tlsgate-altpython", tmp_path)
    assert f"at {sys.executable}," in results.versions["tlsgate-altpython"]
    assert f"at {sys.executable}," in results.versions["tlsgate"]
    assert not alt.memory  # like the other variants, not in the memory workload
