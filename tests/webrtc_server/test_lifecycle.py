"""Sessions end — by timeout, DELETE, the peer, drain or shutdown — and leave nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from tests.webrtc_server.conftest import (
    SECRET,
    MakeOffer,
    StartMedia,
    eventually,
    udp_ports_open,
)
from tests.webrtc_server.stun_probe import connectivity_check
from webrtc_server.app import SESSIONS
from webrtc_server.config import MediaSocketMode
from webrtc_server.session import MediaSession
from wire import route_token

SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(params=[m.value for m in MediaSocketMode])
def mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each test once with the shared media socket and once with a socket per session."""
    return {"media_socket": MediaSocketMode(request.param)}


async def _check_answered(session: dict[str, Any]) -> bool:
    """Does the session's ICE agent answer a check naming its ufrag on its port?

    With a client ufrag other than the offer's the agent answers 401: any
    answer shows the check reached it.
    """
    ufrag = session["server_ufrag"]
    password = route_token.ice_password(SECRET, ufrag)
    reply = await connectivity_check(
        session["local_port"], f"{ufrag}:peer", password, timeout_s=0.5
    )
    return reply is not None


async def _released(client: Any, session: dict[str, Any]) -> None:
    """The session left nothing: its own socket is closed, or the shared one forgot it."""
    port = session["local_port"]
    if session["media_socket"] == MediaSocketMode.PER_SESSION.value:
        assert port not in udp_ports_open()
        return
    assert port in udp_ports_open(), "the shared socket outlives one session"
    drops = 'rtclab_media_socket_drops_total{reason="unknown_ufrag"}'
    before = _metric(await (await client.get("/metrics")).text(), drops)
    assert not await _check_answered(session)
    assert _metric(await (await client.get("/metrics")).text(), drops) == before + 1


async def _create(client: Any, offer: str) -> tuple[str, str, dict[str, Any]]:
    response = await client.post("/sessions", data=offer, headers=SDP)
    answer = await response.text()
    assert response.status == 201, answer
    location = response.headers["Location"]
    return location, answer, await (await client.get(location)).json()


async def _gone(client: Any, location: str) -> dict[str, Any]:
    """Wait until the session is closed; return its final report."""
    final: dict[str, Any] = {}

    async def gone() -> bool:
        response = await client.get(location)
        assert response.status == 200, "a closed session stays readable"
        final.update(await response.json())
        return bool(final["state"] == "closed")

    await eventually(gone)
    return final


async def _connected(client: Any, location: str) -> None:
    async def connected() -> bool:
        return bool((await (await client.get(location)).json())["state"] == "connected")

    await eventually(connected)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def _own_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks, except this test's and the HTTP server's connection handlers."""
    return {
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
        and not getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    }


async def test_a_caller_that_never_arrives_is_closed_by_the_setup_timeout(
    media: StartMedia, make_offer: MakeOffer, mode: dict[str, Any]
) -> None:
    client = await media(setup_timeout_s=1.0, **mode)
    _pc, offer = await make_offer()
    location, _answer, session = await _create(client, offer)
    assert session["local_port"] in udp_ports_open()
    assert await _check_answered(session)  # live: its ICE agent answers on that port
    final = await _gone(client, location)
    assert final["close_reason"] == "setup_timeout" and final["closed"] >= final["created"]
    await _released(client, session)
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, 'rtclab_media_sessions_closed_total{reason="setup_timeout"}') == 1
    assert _metric(metrics, "rtclab_media_sessions") == 0


async def test_delete_closes_the_session_and_its_socket(
    media: StartMedia, make_offer: MakeOffer, mode: dict[str, Any]
) -> None:
    client = await media(**mode)
    before = _own_tasks()
    _pc, offer = await make_offer()
    location, _answer, session = await _create(client, offer)
    session_object = client.app[SESSIONS].get(session["id"])
    assert isinstance(session_object, MediaSession)

    response = await client.delete(location)
    assert response.status == 204
    final = await (await client.get(location)).json()
    assert (final["state"], final["close_reason"]) == ("closed", "deleted")
    assert await (await client.get("/sessions")).json() == []
    assert [s["id"] for s in await (await client.get("/sessions?closed=1")).json()] == [
        session["id"]
    ]
    assert (await client.delete(location)).status == 404  # only live sessions can be ended
    await _released(client, session)
    assert session_object.closed and session_object.lifecycle.close_reason is not None
    # No task of the session outlives it (aiortc's own included).
    await eventually(lambda: not _own_tasks() - before)
    health = await (await client.get("/healthz")).json()
    assert health["sessions"] == 0


async def test_a_peer_that_closes_ends_the_session(
    media: StartMedia, make_offer: MakeOffer, direct: dict[str, Any], mode: dict[str, Any]
) -> None:
    client = await media(**direct, **mode)
    pc, offer = await make_offer()
    location, answer, session = await _create(client, offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await _connected(client, location)
    await pc.close()
    await _gone(client, location)
    await _released(client, session)
    metrics = await (await client.get("/metrics")).text()
    closed = _metric(metrics, 'rtclab_media_sessions_closed_total{reason="peer_closed"}')
    failed = _metric(metrics, 'rtclab_media_sessions_closed_total{reason="failed"}')
    assert closed + failed == 1


async def test_drain_refuses_new_sessions_and_keeps_existing_ones(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media()
    _pc, offer = await make_offer()
    location, _answer, _session = await _create(client, offer)

    response = await client.post("/drain")
    assert response.status == 200
    assert await response.json() == {"draining": True, "sessions": 1}
    health = await (await client.get("/healthz")).json()
    assert health["draining"] is True and health["sessions"] == 1

    _pc2, offer2 = await make_offer()
    refused = await client.post("/sessions", data=offer2, headers=SDP)
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert (await refused.json())["error"]["code"] == "draining"

    assert (await client.get(location)).status == 200  # the existing one carries on
    assert (await client.delete(location)).status == 204


async def test_shutdown_closes_every_session(
    media: StartMedia, make_offer: MakeOffer, mode: dict[str, Any]
) -> None:
    client = await media(**mode)
    ports = []
    for _ in range(2):
        _pc, offer = await make_offer()
        _location, _answer, session = await _create(client, offer)
        ports.append(session["local_port"])
    assert set(ports) <= udp_ports_open()
    await client.close()  # runs the app's cleanup context
    assert not set(ports) & udp_ports_open()
