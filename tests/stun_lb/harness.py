"""The relay in-process with real sockets: its admin app through ``aiohttp_client``, UDP peers.

The fixtures that build these (``start_relay``, ``peers``) live in conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from stun_lb.core.state import record_key
from stun_lb.io.udp import UdpRelay
from tests.stun_lb.packets import SECRET, Session, new_tid
from tests.stun_lb.peers import HANG_GUARD_S, FakeBackend, UdpPeer
from tests.stun_lb.redis_server import RedisServer
from wire import stun
from wire.addr import Address

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Metrics:
    """Prometheus text as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Harness:
    admin: TestClient[Any, Any]
    relay: UdpRelay

    @property
    def address(self) -> Address:
        return self.relay.local_address

    async def metrics(self) -> Metrics:
        response = await self.admin.get("/metrics")
        assert response.status == 200
        return parse_metrics(await response.text())

    async def metric(self, name: str, **labels: str) -> float:
        return (await self.metrics())[(name, frozenset(labels.items()))]

    async def wait_for_metric(self, value: float, name: str, **labels: str) -> None:
        """Poll until ``name{labels}`` reaches ``value`` (a hang guard, not a timing claim)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD_S
        while (current := await self.metric(name, **labels)) < value:
            assert loop.time() < deadline, f"{name}{labels} stuck at {current}, not {value}"
            await asyncio.sleep(0.02)

    async def flows(self) -> list[dict[str, Any]]:
        response = await self.admin.get("/flows")
        assert response.status == 200
        flows: list[dict[str, Any]] = await response.json()
        return flows


StartRelay = Callable[..., Awaitable[Harness]]
OpenPeer = Callable[..., Awaitable[Any]]


async def backend_at(peers: OpenPeer, host: str = "127.0.0.1", port: int = 0) -> FakeBackend:
    backend: FakeBackend = await peers(FakeBackend, host=host, port=port, secret=SECRET)
    return backend


async def call(
    relay: Harness, client: UdpPeer, backend: FakeBackend, session: Session
) -> tuple[Address, bytes]:
    """The client's first check reaches the backend and the answer comes back.

    Returns the peer address the backend saw (the relay's upstream socket)
    and the transaction id.
    """
    tid = new_tid()
    client.send(session.check(tid), relay.address)
    request, upstream = await backend.recv()
    assert stun.parse(request).transaction_id == tid
    answer, source = await client.recv()
    assert source == relay.address
    assert stun.parse(answer).transaction_id == tid
    return upstream, tid


async def stored(redis_server: RedisServer, client: Address) -> bytes:
    """Poll Redis until ``client``'s entry is there (the writer runs off the packet path)."""
    deadline = asyncio.get_running_loop().time() + HANG_GUARD_S
    while True:
        with redis_server.client() as redis:
            value = redis.get(record_key(client))
        if value is not None:
            assert isinstance(value, bytes)
            return value
        assert asyncio.get_running_loop().time() < deadline, f"no entry for {client}"
        await asyncio.sleep(0.02)
