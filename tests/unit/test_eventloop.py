"""Choosing the event loop (``serve --event-loop``)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from tlsgate import eventloop
from tlsgate.errors import UsageError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


async def _running() -> eventloop.EventLoop:
    return eventloop.running()


def test_auto_and_uvloop_run_on_uvloop() -> None:
    for name in ("auto", "uvloop"):
        loop = eventloop.choose(name)
        assert loop.name == "uvloop"
        assert loop.describe() == f"uvloop {uvloop.__version__}"
        assert eventloop.run(loop, _loop_module()).startswith("uvloop")
        assert eventloop.run(loop, _running()) == loop


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    loop = eventloop.choose("asyncio")
    assert loop.describe() == "asyncio event loop"
    assert eventloop.run(loop, _loop_module()).startswith("asyncio")
    assert eventloop.run(loop, _running()) == loop


def test_without_uvloop_auto_falls_back_and_uvloop_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.choose("auto").name == "asyncio"
    with pytest.raises(UsageError) as caught:
        eventloop.choose("uvloop")
    assert "uvloop cannot be imported" in str(caught.value)
    assert "--event-loop asyncio" in caught.value.fix


def test_an_unknown_loop_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown event loop 'trio'"):
        eventloop.choose("trio")
