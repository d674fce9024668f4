"""``serve --malloc``: glibc keeps freed memory for the next buffer (malloc.py).

The effect is checked where it shows: minor page faults of a real process that frees and
makes again buffers the size a member makes per read.  Each case runs in a fresh
interpreter, because the setting is process-wide and glibc cannot be put back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tlsgate import malloc
from tlsgate.errors import UsageError

# Four buffers of ~300 KiB made and freed 200 times: glibc's defaults give the heap top
# back each time (their dynamic trim threshold is twice the largest freed block), so
# every cycle faults its pages in again.
FAULTS_PER_CYCLE = """
import resource, sys
from tlsgate import malloc
print(malloc.tune(sys.argv[1]))
def cycle():
    buffers = [b"x" * (300 * 1024 + i * 4096) for i in range(4)]
    del buffers
for _ in range(20):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    cycle()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


def faults_per_cycle(choice: str, **env: str) -> tuple[str, float]:
    environ = {k: v for k, v in os.environ.items() if k not in malloc.GLIBC_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CYCLE, choice],
        capture_output=True, text=True, check=True, timeout=60, env={**environ, **env},
    ).stdout.split("\n")  # fmt: skip
    return out[0], float(out[1])


def test_tuned_stops_the_page_faults_of_buffers_made_again() -> None:
    described, faults = faults_per_cycle("tuned")
    assert described == "glibc malloc tuned"
    assert faults < 5


def test_default_leaves_glibc_as_it_is_and_the_faults_show() -> None:
    described, faults = faults_per_cycle("default")
    assert described == "glibc malloc as is"
    assert faults > 100  # ~4 x 75 pages: the pattern above is one tuning removes


def test_glibc_own_setting_wins() -> None:
    described, faults = faults_per_cycle("tuned", MALLOC_TRIM_THRESHOLD_="1000")
    assert described == "glibc malloc as set by MALLOC_TRIM_THRESHOLD_"
    assert faults > 100


@pytest.mark.parametrize(
    ("environ", "found"),
    [
        ({}, None),
        ({"MALLOC_MMAP_THRESHOLD_": "1"}, "MALLOC_MMAP_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "GLIBC_TUNABLES"),
        ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, None),
    ],
)
def test_which_glibc_settings_count(environ: dict[str, str], found: str | None) -> None:
    assert malloc.glibc_setting(environ) == found


def test_unknown_choice_names_the_choices() -> None:
    with pytest.raises(UsageError) as caught:
        malloc.tune("jemalloc", {})
    assert "tuned, default" in (caught.value.fix or "")
