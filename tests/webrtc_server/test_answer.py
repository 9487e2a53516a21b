"""POST /sessions with real aiortc offers: the answer's properties, and that they are real."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiortc import RTCSessionDescription

from tests.webrtc_server.conftest import (
    RELAY,
    SECRET,
    MakeOffer,
    StartMedia,
    eventually,
    udp_ports_open,
)
from tests.webrtc_server.stun_probe import connectivity_check
from wire import route_token, sdp


def _candidates(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("a=candidate:")]


async def _post(client: Any, offer: str) -> tuple[Any, str]:
    response = await client.post(
        "/sessions", data=offer, headers={"Content-Type": "application/sdp"}
    )
    return response, await response.text()


async def test_relay_topology_answer(media: StartMedia, make_offer: MakeOffer) -> None:
    client = await media(backend_id=7)
    _pc, offer = await make_offer()
    response, answer = await _post(client, offer)
    assert response.status == 201, answer
    assert response.content_type == "application/sdp"
    assert response.headers["X-Rtclab-Backend"] == "7"
    location = response.headers["Location"]
    assert location.startswith("/sessions/")

    session = await (await client.get(location)).json()
    assert session["id"] == location.rsplit("/", 1)[1]
    assert session["state"] == "answered"

    # Exactly one candidate per section, and it is the relay's address.
    relay_candidate = f"{RELAY[0]} {RELAY[1]} typ host"
    assert _candidates(answer) and all(relay_candidate in c for c in _candidates(answer))
    assert len(_candidates(answer)) == len(sdp.parse(answer).media)
    # Interop: passive for an actpass offer; sha-256 only.
    assert sdp.offer_setup(offer) == "actpass"
    assert {v for v in _attribute_values(answer, "setup")} == {"passive"}
    assert {v.split()[0] for v in _attribute_values(answer, "fingerprint")} == {"sha-256"}

    # The ufrag is a route token naming this backend and the session's real UDP port.
    ufrag, password = sdp.ice_credentials(answer)
    token = route_token.decode(SECRET, ufrag)
    assert token.backend_id == 7
    assert token.port == session["local_port"]
    assert session["server_ufrag"] == ufrag
    assert token.port in udp_ports_open()
    assert password == route_token.ice_password(SECRET, ufrag)

    # And the ICE agent behind that port really holds these credentials.
    client_ufrag, _ = sdp.ice_credentials(offer)
    reply = await connectivity_check(token.port, f"{ufrag}:{client_ufrag}", password)
    assert reply is not None and reply.is_success


def _attribute_values(text: str, name: str) -> list[str]:
    prefix = f"a={name}:"
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


async def test_direct_topology_answer_names_the_session_socket_and_a_peer_connects(
    media: StartMedia, make_offer: MakeOffer, direct: dict[str, Any]
) -> None:
    client = await media(**direct)
    pc, offer = await make_offer()
    response, answer = await _post(client, offer)
    assert response.status == 201, answer
    session = await (await client.get(response.headers["Location"])).json()
    port = session["local_port"]
    assert {c.split()[4:6] == ["127.0.0.1", str(port)] for c in _candidates(answer)} == {True}

    # A real peer that only knows the answer connects: the route-token ufrag and the
    # derived password are what the server's ICE agent checks against.
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await eventually(lambda: pc.connectionState == "connected")

    async def server_connected() -> bool:
        nonlocal session
        session = await (await client.get(response.headers["Location"])).json()
        return bool(session["state"] == "connected")

    await eventually(server_connected)
    assert session["remote"] is not None
    assert session["setup_ms"]["answer"] is not None
    assert session["setup_ms"]["dtls_connected"] >= session["setup_ms"]["answer"]


async def test_the_offer_candidates_are_never_checked(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    """A candidate left in the offer would let the server reach the client around the relay."""
    client = await media()
    _pc, offer = await make_offer()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trap:
        trap.bind(("127.0.0.1", 0))
        trap.setblocking(False)
        trap_port = trap.getsockname()[1]
        lines = []
        for line in offer.splitlines():
            if line.startswith("a=candidate:"):
                parts = line.split()
                parts[5] = str(trap_port)
                line = " ".join(parts)
            lines.append(line)
        response, answer = await _post(client, "\r\n".join(lines) + "\r\n")
        assert response.status == 201, answer
        await asyncio.sleep(1.0)  # aioice starts checks every 20 ms once it has pairs
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(0.2):
                data = await loop.sock_recv(trap, 2048)
        except TimeoutError:
            data = b""
    assert data == b"", "the media server sent to a candidate from the offer"
