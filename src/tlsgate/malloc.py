"""How a member asks glibc's allocator to keep freed memory for the next buffer.

A byte stream through an inspecting member makes a few buffers of 16 KiB to ~300 KiB
per socket read: the ciphertext read, the plaintext, the re-encrypted bytes that
``MemoryBIO.read()`` returns.  glibc serves an allocation above ``M_MMAP_THRESHOLD``
(128 KiB at start, raised as large blocks are freed) with a fresh ``mmap``, and gives
the top of its heap back to the kernel once more than ``M_TRIM_THRESHOLD`` of it is free.
Either way the next buffer lands on pages the kernel must fault in and zero again.
Measured in process (10 MiB downloads through inspection, 4 at a time): 140 to 310 page
faults per MB moved, at ~2.7 us each on this virtual machine, against 7 per MB with the
thresholds below; BENCHMARKS.md has the side-by-side numbers.

``tuned`` (the default) sets both thresholds once at start: allocations up to
:data:`MMAP_THRESHOLD` come from the heap, and up to :data:`TRIM_THRESHOLD` of free
heap is kept for reuse, so a member's resident memory may stay that much above its
low-water mark after a burst.  ``default`` leaves glibc as it is.  glibc's own settings
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) win over
``tuned``: when one is set, tlsgate leaves the allocator alone.  Without glibc (musl)
there is nothing to tune.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Final

from tlsgate.errors import UsageError

CHOICES: Final = ("tuned", "default")
MMAP_THRESHOLD: Final = 1 << 20
"""1 MiB: above the largest buffer a member makes per read (256 KiB reads; a TLS
record adds 22 bytes per 16 KiB)."""
TRIM_THRESHOLD: Final = 8 << 20
"""8 MiB of free heap kept before any is given back."""

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
GLIBC_SETTINGS: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
"""The environment variables through which glibc is tuned by hand; see :func:`tune`."""


def glibc_setting(environ: Mapping[str, str]) -> str | None:
    """The first of glibc's own allocator settings present in ``environ``, if any.
    ``GLIBC_TUNABLES`` counts only when it names a ``glibc.malloc`` tunable."""
    for name in GLIBC_SETTINGS:
        value = environ.get(name)
        if value is not None and (name != "GLIBC_TUNABLES" or "glibc.malloc." in value):
            return name
    return None


def tune(choice: str, environ: Mapping[str, str] = os.environ) -> str:
    """Apply ``--malloc CHOICE`` to this process; what was done, for the start-up line
    (``glibc malloc tuned``, ``glibc malloc as is``, …)."""
    if choice not in CHOICES:
        raise UsageError(
            f"unknown malloc setting {choice!r}", fix=f"use one of: {', '.join(CHOICES)}"
        )
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return "malloc as is (not glibc)"
    if choice == "default":
        return "glibc malloc as is"
    setting = glibc_setting(environ)
    if setting is not None:
        return f"glibc malloc as set by {setting}"
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # M_MMAP_THRESHOLD first: setting either one turns off glibc's dynamic adjustment.
    for option, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if not mallopt(option, value):
            return "glibc malloc as is (mallopt refused)"
    return "glibc malloc tuned"


__all__ = ["CHOICES", "GLIBC_SETTINGS", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "glibc_setting", "tune"]
