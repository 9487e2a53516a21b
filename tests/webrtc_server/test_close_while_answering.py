"""A session closed while its answer is still being made (the setup timer on a loaded
machine, a DELETE, shutdown) must not leave the UDP socket the answer then binds.

Found by lab/attacks/http_abuse.py: after a thousand abandoned offers the media
server held UDP sockets with no session and no open peer connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.webrtc_server.conftest import MakeOffer, udp_ports_open
from webrtc_server import aioice_patch
from webrtc_server.config import MediaConfig, MediaSocketMode
from webrtc_server.core.answer import prepare_offer
from webrtc_server.core.phases import CloseReason
from webrtc_server.media_socket import MediaSockets
from webrtc_server.metrics import MediaMetrics
from webrtc_server.session import MediaSession
from wire.service import ApiError


@pytest.mark.parametrize("mode", list(MediaSocketMode), ids=lambda m: m.value)
@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8, 13, 21, 34])
async def test_closing_during_the_answer_leaves_no_socket(
    make_offer: MakeOffer, yields: int, mode: MediaSocketMode
) -> None:
    aioice_patch.install()
    _pc, offer = await make_offer()
    config = MediaConfig(media_socket=mode)
    sockets = MediaSockets(config)
    await sockets.start()
    before = udp_ports_open()
    closed: list[Any] = []
    session = MediaSession(
        "0123456789abcdef",
        config,
        MediaMetrics(CollectorRegistry()),
        sockets,
        on_closed=closed.append,
    )
    answering = asyncio.create_task(session.answer(prepare_offer(offer)))
    for _ in range(yields):  # the answer is somewhere between the offer and gathering
        await asyncio.sleep(0)
    await session.close(CloseReason.SETUP_TIMEOUT)
    try:
        await answering
    except ApiError as exc:
        assert exc.status == 503 and exc.code == "closed"
    assert closed == [session]
    assert udp_ports_open() - before == set()
    sockets.close()
