"""Which asyncio event loop a member runs on: uvloop (libuv, in C) or asyncio's own.

On CPython 3.11 asyncio's loop is Python code: every readable socket goes through
``_run_once``, the selector and the transport's ``_read_ready`` before tlsgate sees a
byte.  uvloop does the same in C, which takes ~10 % of the instructions of an inspected
keep-alive request and ~16 % of a plain one (BENCHMARKS.md).  tlsgate uses only its
plain TCP transports: TLS stays in tlsgate's own MemoryBIO pump, because uvloop's SSL
transport lost the tail of downloads when a server closed while reading was paused
(REFERENCE.md).  ``tests/e2e/test_event_loop.py`` downloads through both loops in that
situation and checks every byte.

``auto`` (the default) picks uvloop when it is installed, else asyncio.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from tlsgate.errors import UsageError

CHOICES = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EventLoop:
    name: str
    """``uvloop`` or ``asyncio``."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    """For ``asyncio.Runner(loop_factory=…)``; None: asyncio's default loop."""
    version: str = ""

    def describe(self) -> str:
        """``uvloop 0.23.0`` or ``asyncio event loop``, for the start-up line."""
        return f"uvloop {self.version}" if self.name == "uvloop" else "asyncio event loop"


def choose(name: str) -> EventLoop:
    """The event loop for ``--event-loop NAME``; raises UsageError when uvloop is asked
    for by name and cannot be imported."""
    if name not in CHOICES:
        raise UsageError(f"unknown event loop {name!r}", fix=f"use one of: {', '.join(CHOICES)}")
    if name == "asyncio":
        return EventLoop("asyncio", None)
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if name == "auto":
            return EventLoop("asyncio", None)
        raise UsageError(
            f"--event-loop uvloop: uvloop cannot be imported ({exc})",
            fix="install it (pip install uvloop) or use --event-loop asyncio",
        ) from None
    return EventLoop("uvloop", uvloop.new_event_loop, str(uvloop.__version__))


def running() -> EventLoop:
    """The kind of the loop this runs on (the start-up line describes it)."""
    if type(asyncio.get_running_loop()).__module__.partition(".")[0] == "uvloop":
        return choose("uvloop")
    return EventLoop("asyncio", None)


def run(loop: EventLoop, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a new event loop of this kind."""
    with asyncio.Runner(loop_factory=loop.factory) as runner:
        return runner.run(main)


__all__ = ["CHOICES", "EventLoop", "choose", "run", "running"]
