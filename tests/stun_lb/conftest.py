"""Run the relay's socket tests on both event loops it supports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    # The shell reads sockets through loop.add_reader, which each loop
    # implements its own way: the socket tests run on both.
    if item.path.name == "test_udp_relay.py":
        return _loop_factories()
    return {"asyncio": asyncio.new_event_loop}
