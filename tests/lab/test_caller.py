"""The aiortc caller against a real media server (direct topology, in this process)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer

from lab.callers.aiortc_caller import AiortcCall, CallOptions, run_call
from webrtc_server.app import create_app
from webrtc_server.config import MediaConfig, Topology

STATS_KEYS = {"packets_sent", "packets_received", "packets_lost", "loss_ratio", "max_gap_ms"}
# What the receiver's RTP stack counted on the wire, beside what the listener got.
RTP_KEYS = {"rtp_packets_received", "rtp_packets_lost", "rtp_loss_ratio"}
SETUP_KEYS = {"answer", "ice_connected", "dtls_connected", "first_audio_in", "datachannel_open"}
TURN_KEYS = {"speech_end_ms", "first_response_audio_ms", "latency_ms"}
HANG_GUARD_S = 30.0

StartMedia = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def media(aiohttp_client: AiohttpClient) -> StartMedia:
    async def start(**overrides: Any) -> TestClient[Any, Any]:
        config = MediaConfig(**{"topology": Topology.DIRECT, **overrides})
        return await aiohttp_client(create_app(config))

    return start


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def test_call_result_schema(media: StartMedia) -> None:
    client = await media(backend_id=4)
    result = await run_call(str(client.make_url("/sessions")), seconds=4.5, keep_arrivals=True)
    json.dumps(result)  # plain JSON all the way down
    assert result["schema"] == 1
    assert result["ok"] is True and result["error"] is None, result["error"]
    assert isinstance(result["call_id"], str) and result["call_id"]
    assert result["location"].rsplit("/", 1)[1] == result["call_id"]
    assert result["backend"] == 4

    setup = result["setup_ms"]
    assert set(setup) == SETUP_KEYS and all(_is_number(v) and v >= 0 for v in setup.values())
    assert setup["answer"] <= setup["ice_connected"] <= setup["dtls_connected"]
    assert setup["dtls_connected"] <= setup["first_audio_in"]
    assert setup["dtls_connected"] <= setup["datachannel_open"]

    for direction in ("uplink", "downlink"):
        stats = result[direction]
        assert set(stats) == STATS_KEYS | RTP_KEYS, direction
        assert all(_is_number(v) for v in stats.values()), (direction, stats)
        assert stats["packets_received"] > 0 and stats["packets_sent"] >= stats["packets_received"]
        assert 0 <= stats["loss_ratio"] <= 1
        # Every frame heard came in an RTP packet; on loopback the wire lost none.
        assert stats["rtp_packets_received"] >= stats["packets_received"]
        assert stats["rtp_packets_lost"] == 0 and stats["rtp_loss_ratio"] == 0

    assert result["turns"], result
    for turn in result["turns"]:
        assert set(turn) == TURN_KEYS and all(_is_number(v) for v in turn.values())
        assert turn["latency_ms"] == pytest.approx(
            turn["first_response_audio_ms"] - turn["speech_end_ms"], abs=0.2
        )

    assert result["local_address"].startswith("127.0.0.1:")
    assert result["server_view"]["remote"] == result["local_address"]
    assert result["events"][0][0] == "session.created"
    arrivals = result["arrivals_ms"]
    assert len(arrivals) == result["downlink"]["packets_received"]
    assert [a[0] for a in arrivals] == sorted(a[0] for a in arrivals)


def _signaling_like(media_url: str) -> web.Application:
    """A minimal stand-in for signaling: its URL shapes, forwarding to one media server."""
    sessions: dict[str, str] = {}

    async def post(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{media_url}/sessions", data=await request.read(), headers=request.headers
            ) as response,
        ):
            body = await response.text()
            if response.status != 201:
                return web.Response(status=response.status, text=body)
            location = response.headers["Location"]
        call_id = f"call{len(sessions) + 1}"
        sessions[call_id] = location
        return web.Response(
            status=201,
            text=body,
            content_type="application/sdp",
            headers={"Location": f"/v1/calls/{call_id}", "X-Rtclab-Backend": "2"},
        )

    async def get(request: web.Request) -> web.Response:
        location = sessions[request.match_info["id"]]
        async with aiohttp.ClientSession() as http, http.get(f"{media_url}{location}") as r:
            return web.json_response({"id": request.match_info["id"], "session": await r.json()})

    async def delete(request: web.Request) -> web.Response:
        location = sessions.pop(request.match_info["id"])
        async with aiohttp.ClientSession() as http, http.delete(f"{media_url}{location}") as r:
            return web.Response(status=r.status)

    app = web.Application()
    app.router.add_post("/v1/calls", post)
    app.router.add_get("/v1/calls/{id}", get)
    app.router.add_delete("/v1/calls/{id}", delete)
    return app


async def test_call_through_a_signaling_shaped_api(
    media: StartMedia, aiohttp_server: AiohttpServer
) -> None:
    client = await media()
    front = await aiohttp_server(_signaling_like(str(client.make_url("")).rstrip("/")))
    result = await run_call(str(front.make_url("/v1/calls")), seconds=2.0)
    assert result["ok"], result["error"]
    assert result["call_id"] == "call1" and result["backend"] == 2
    # Uplink counts come from the session JSON under "session".
    assert result["uplink"]["packets_received"] > 0
    assert await (await client.get("/sessions")).json() == []  # the hang-up reached it


async def test_a_refused_offer_is_a_failed_call(media: StartMedia) -> None:
    client = await media()
    await client.post("/drain")
    result = await run_call(str(client.make_url("/sessions")), seconds=2.0)
    assert result["ok"] is False
    assert result["error"].startswith("offer_rejected: HTTP 503: draining")
    assert result["call_id"] is None and result["setup_ms"]["answer"] is None
    assert result["turns"] == []


async def test_a_call_that_cannot_connect_times_out_and_hangs_up(media: StartMedia) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        dead_relay = sock.getsockname()
    # The answer points at a "relay" where nothing listens.
    client = await media(topology=Topology.RELAY, relay=dead_relay)
    result = await run_call(str(client.make_url("/sessions")), seconds=2.0, setup_timeout_s=1.0)
    assert result["ok"] is False and result["error"].startswith("setup_timeout"), result
    assert result["setup_ms"]["answer"] is not None
    assert result["setup_ms"]["dtls_connected"] is None
    assert await (await client.get("/sessions")).json() == []


async def test_concurrent_calls_in_one_process_are_independent(media: StartMedia) -> None:
    client = await media()
    url = str(client.make_url("/sessions"))
    seen: list[tuple[str, Any]] = []

    def on_connected(call: AiortcCall) -> None:
        seen.append((str(call.call_id), call.local_address()))

    calls = [AiortcCall(url, CallOptions(seconds=2.5), on_connected=on_connected) for _ in range(3)]
    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(*(call.run() for call in calls))
    assert all(result["ok"] for result in results), [r["error"] for r in results]
    assert len({result["call_id"] for result in results}) == 3
    assert len({result["local_address"] for result in results}) == 3
    assert sorted(call_id for call_id, _ in seen) == sorted(r["call_id"] for r in results)
    assert all(address is not None for _, address in seen)
    for result in results:
        assert result["downlink"]["packets_received"] > 0
        assert result["uplink"]["packets_received"] > 0


async def test_stop_ends_a_call_early_and_it_still_reports(media: StartMedia) -> None:
    client = await media()

    async def stop_soon(call: AiortcCall) -> None:
        asyncio.get_running_loop().call_later(0.5, call.stop)

    call = AiortcCall(
        str(client.make_url("/sessions")), CallOptions(seconds=600), on_connected=stop_soon
    )
    async with asyncio.timeout(HANG_GUARD_S):
        result = await call.run()
    assert result["ok"], result["error"]
    assert call.connected.is_set()
    assert result["uplink"]["packets_received"] is not None
