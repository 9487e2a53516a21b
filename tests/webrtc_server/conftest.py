from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
from pytest_aiohttp import AiohttpClient

from webrtc_server import aioice_patch
from webrtc_server.app import create_app
from webrtc_server.config import MediaConfig, Topology

OFFER_PATH = Path(__file__).parent.parent / "data" / "sdp" / "aiortc-1.16-offer.sdp"
SECRET = b"test-secret"
RELAY = ("127.0.0.1", 3478)

MediaClient = TestClient[Any, Any]
StartMedia = Callable[..., Awaitable[MediaClient]]
MakeOffer = Callable[..., Awaitable[tuple[RTCPeerConnection, str]]]


@pytest.fixture
def recorded_offer() -> str:
    """An offer aiortc 1.16 wrote (candidates, end-of-candidates, three fingerprints)."""
    return OFFER_PATH.read_text()


@pytest.fixture
def media(aiohttp_client: AiohttpClient) -> StartMedia:
    """``await media(**config)``: a test client for a real media server app."""

    async def start(**overrides: Any) -> MediaClient:
        settings: dict[str, Any] = {"secret": SECRET, "relay": RELAY, **overrides}
        return await aiohttp_client(create_app(MediaConfig(**settings)))

    return start


@pytest.fixture
def direct() -> dict[str, Any]:
    return {"topology": Topology.DIRECT}


@pytest.fixture
async def make_offer() -> AsyncIterator[MakeOffer]:
    """``pc, sdp = await make_offer()``: a real aiortc offerer, closed after the test."""
    peers: list[RTCPeerConnection] = []

    async def make(
        *, datachannel: bool = True, audio: bool = True
    ) -> tuple[RTCPeerConnection, str]:
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        peers.append(pc)
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        if datachannel:
            pc.createDataChannel("oai-events")
        with aioice_patch.bind_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        return pc, pc.localDescription.sdp

    yield make
    for pc in peers:
        await pc.close()


def udp_ports_open() -> set[int]:
    """Local ports of every UDP socket in this network namespace (/proc/net/udp{,6})."""
    ports: set[int] = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local = line.split()[1]
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, every_s: float = 0.02
) -> None:
    """Poll ``check`` until it holds; the timeout is a hang guard, not a speed claim."""
    async with asyncio.timeout(timeout_s):
        while True:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(every_s)
