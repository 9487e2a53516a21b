"""Sessions end — by timeout, DELETE, the peer, drain or shutdown — and leave nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCSessionDescription

from tests.webrtc_server.conftest import MakeOffer, StartMedia, eventually, udp_ports_open
from webrtc_server.app import SESSIONS
from webrtc_server.session import MediaSession

SDP = {"Content-Type": "application/sdp"}


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
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media(setup_timeout_s=0.5)
    _pc, offer = await make_offer()
    location, _answer, session = await _create(client, offer)
    assert session["local_port"] in udp_ports_open()
    final = await _gone(client, location)
    assert final["close_reason"] == "setup_timeout" and final["closed"] >= final["created"]
    assert session["local_port"] not in udp_ports_open()
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, 'rtclab_media_sessions_closed_total{reason="setup_timeout"}') == 1
    assert _metric(metrics, "rtclab_media_sessions") == 0


async def test_delete_closes_the_session_and_its_socket(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media()
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
    assert session["local_port"] not in udp_ports_open()
    assert session_object.closed and session_object.lifecycle.close_reason is not None
    # No task of the session outlives it (aiortc's own included).
    await eventually(lambda: not _own_tasks() - before)
    health = await (await client.get("/healthz")).json()
    assert health["sessions"] == 0


async def test_a_peer_that_closes_ends_the_session(
    media: StartMedia, make_offer: MakeOffer, direct: dict[str, Any]
) -> None:
    client = await media(**direct)
    pc, offer = await make_offer()
    location, answer, session = await _create(client, offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await _connected(client, location)
    await pc.close()
    await _gone(client, location)
    assert session["local_port"] not in udp_ports_open()
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


async def test_shutdown_closes_every_session(media: StartMedia, make_offer: MakeOffer) -> None:
    client = await media()
    ports = []
    for _ in range(2):
        _pc, offer = await make_offer()
        _location, _answer, session = await _create(client, offer)
        ports.append(session["local_port"])
    assert set(ports) <= udp_ports_open()
    await client.close()  # runs the app's cleanup context
    assert not set(ports) & udp_ports_open()
