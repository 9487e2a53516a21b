from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from signaling.app import create_app
from signaling.config import SignalingConfig
from tests.signaling.standin import StandInMediaServer

OFFER_PATH = Path(__file__).parent.parent / "data" / "sdp" / "aiortc-1.16-offer.sdp"

StartStandIn = Callable[[int], Awaitable[StandInMediaServer]]
StartSignaling = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def offer_sdp() -> str:
    return OFFER_PATH.read_text()


@pytest.fixture
async def standin() -> AsyncIterator[StartStandIn]:
    """``await standin(backend_id)``: a running stand-in media server (test fixture)."""
    started: list[StandInMediaServer] = []

    async def start(backend_id: int) -> StandInMediaServer:
        server = StandInMediaServer(backend_id)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def signaling(aiohttp_client: AiohttpClient) -> StartSignaling:
    """``await signaling(url, ..., **config)``: a test client for the real signaling app.

    Health polling defaults to once an hour, so the poll at startup is the only
    one and a test's placement is decided by what it set up before.
    """

    async def start(*media_urls: str, **overrides: Any) -> TestClient[Any, Any]:
        settings: dict[str, Any] = {"health_interval_s": 3600.0, **overrides}
        config = SignalingConfig(media_urls=tuple(media_urls), **settings)
        return await aiohttp_client(create_app(config))

    return start
