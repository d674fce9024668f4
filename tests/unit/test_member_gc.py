"""tlsgate serve tunes the garbage collector: log records wait for their batch, so the
young generation is collected less often (measured in BENCHMARKS.md)."""

from __future__ import annotations


def test_serving_tunes_only_the_young_generation() -> None:
    import gc

    from tlsgate.member import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 11, 12)
    finally:
        gc.set_threshold(*before)
