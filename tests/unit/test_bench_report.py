"""The benchmark report's log cost: tlsgate against tlsgate-nolog, paired by round."""

from __future__ import annotations

from benchmarks.load import Sample
from benchmarks.report import NOLOG, log_cost
from benchmarks.run import Results


def results(on: list[int], off: list[int]) -> Results:
    r = Results(date="2026-11-26", machine="test", versions={}, options={})
    r.rates["keepalive8"] = {
        "tlsgate": [Sample(ok=n, elapsed=1.0) for n in on],
        NOLOG: [Sample(ok=n, elapsed=1.0) for n in off],
    }
    return r


def test_the_median_of_same_round_ratios() -> None:
    # Round 2 was a slow minute for both; round 3 a fast one for tlsgate only.
    cost = log_cost(results([950, 500, 1200], [1000, 520, 1000]))
    assert cost is not None and round(cost, 6) == round((1 - 500 / 520) * 100, 6)


def test_an_even_number_of_rounds_takes_the_middle_two() -> None:
    cost = log_cost(results([900, 1000], [1000, 1000]))
    assert cost is not None and round(cost, 6) == 5.0


def test_no_cost_without_both_columns() -> None:
    r = results([900], [])
    assert log_cost(r) is None
