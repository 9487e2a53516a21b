"""Run the relay's socket tests on both event loops it supports; a real Redis when asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stun_lb.core.config import RelayConfig
from stun_lb.io.admin import RELAY, create_app
from tests.stun_lb.harness import Harness, OpenPeer, StartRelay
from tests.stun_lb.packets import SECRET
from tests.stun_lb.peers import UdpPeer
from tests.stun_lb.redis_server import RedisServer, running_redis


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
    if item.path.name in ("test_udp_relay.py", "test_udp_relay_encap.py"):
        return _loop_factories()
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own (skips only if the binary is absent)."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
async def peers() -> AsyncIterator[OpenPeer]:
    opened: list[UdpPeer] = []

    async def open_peer(kind: type[UdpPeer] = UdpPeer, **kwargs: Any) -> Any:
        peer = await kind.open(**kwargs)
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


@pytest.fixture
def start_relay(aiohttp_client: Any) -> StartRelay:
    """Start the relay in its admin app (as in production), listening on a free port."""

    async def start(**changes: Any) -> Harness:
        defaults: dict[str, Any] = {
            "listen": ("127.0.0.1", 0),
            "backends": {1: "127.0.0.1", 2: "127.0.0.2"},
            "secret": SECRET,
        }
        config = replace(RelayConfig(), **{**defaults, **changes})
        app = create_app(config)
        admin = await aiohttp_client(app)
        return Harness(admin, app[RELAY])

    return start
