"""Real calls through the real stack: relay, two media servers, signaling.

Every part runs as its own process; callers are real aiortc peers.  These
tests are what DESIGN.md's call path promises, checked from outside.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from lab.callers.aiortc_caller import run_call
from lab.stack import Stack
from tests.e2e.conftest import StackFactory
from wire import route_token

pytestmark = pytest.mark.e2e

CALL_SECONDS = 5.0


def assert_good_call(result: dict[str, Any]) -> None:
    assert result["ok"], result.get("error")
    for direction in ("uplink", "downlink"):
        stats = result[direction]
        # A 5 s call carries ~250 frames each way; allow for frames in flight at hang-up.
        assert stats["packets_received"] > 200, (direction, stats)
        assert stats["packets_lost"] == 0, (direction, stats)
    assert result["turns"], "the agent never answered"
    assert all(turn["latency_ms"] and turn["latency_ms"] > 0 for turn in result["turns"])
    phases = ("answer", "ice_connected", "dtls_connected", "datachannel_open", "first_audio_in")
    for phase in phases:
        assert result["setup_ms"][phase] is not None, phase


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.mark.parametrize("media_socket", ["shared", "per-session"])
@pytest.mark.parametrize("forward", ["nat", "encap"])
async def test_concurrent_calls_flow_through_the_relay_and_spread_over_backends(
    stack_factory: StackFactory, forward: str, media_socket: str
) -> None:
    async with stack_factory(media_servers=2, forward=forward, media_socket=media_socket) as stack:
        offer_url = f"{stack.signaling_url}/v1/calls"
        flows_during: list[Any] = []
        sessions_during: list[Any] = []
        health = [await get(f"{stack.media_url(index)}/healthz") for index in range(2)]

        async def snapshot_when_all_connected() -> None:
            # Look while the calls are live: relay flows and each media server's sessions.
            await asyncio.sleep(CALL_SECONDS / 2 + 1.5)
            flows_during.extend(await get(f"{stack.relay_admin_url}/flows"))
            for index in range(2):
                sessions_during.extend(await get(f"{stack.media_url(index)}/sessions"))

        calls = [run_call(offer_url, seconds=CALL_SECONDS) for _ in range(4)]
        results, _ = await asyncio.gather(asyncio.gather(*calls), snapshot_when_all_connected())

    for result in results:
        assert_good_call(result)
    assert {result["backend"] for result in results} == {1, 2}, "calls were not spread"
    assert len(sessions_during) == 4 and len(flows_during) == 4

    # Every session's peers, as the media server sees them, are what the relay's
    # flows say it is shown: the relay's upstream sockets (nat), or the callers' own
    # addresses (encap).  Nothing bypassed the relay.
    upstreams = {flow["upstream"] for flow in flows_during}
    callers = {result["local_address"] for result in results}
    remotes = {peer["remote"] for session in sessions_during for peer in session["remotes"]}
    assert {session["remote"] for session in sessions_during} == remotes
    assert len(remotes) == 4 and remotes == upstreams, (remotes, upstreams)
    if forward == "encap":
        assert remotes == callers
        internal = f"{stack.config.host}:{stack.relay_internal_port}"
        vias = {peer["via"] for session in sessions_during for peer in session["remotes"]}
        assert vias == {internal}
    else:
        assert not remotes & callers
        assert {flow["client"] for flow in flows_during} == callers
    # One socket per media server, or one per session; each token names that port.
    ports = {session["local_port"] for session in sessions_during}
    if media_socket == "shared":
        assert ports == {int(h["media_address"].rsplit(":", 1)[1]) for h in health}
    else:
        assert len(ports) == 4 and all(h["media_address"] is None for h in health)
    for session in sessions_during:
        assert (session["forward"], session["media_socket"]) == (forward, media_socket)
        token = route_token.decode(stack.config.secret.encode(), session["server_ufrag"])
        assert token.port == session["local_port"]
    # And every flow was routed by a token that names the backend that owns it.
    for flow in flows_during:
        token = route_token.decode(stack.config.secret.encode(), flow["server_ufrag"])
        assert token.backend_id == flow["backend_id"]
        assert flow["packets_up"] > 0 and flow["packets_down"] > 0


async def post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        is_json = response.content_type == "application/json"
        payload = await response.json() if is_json else await response.text()
        return response.status, dict(response.headers), payload


async def test_signaling_rejects_bad_input_with_json_errors(stack_factory: StackFactory) -> None:
    from pathlib import Path

    offer = (Path(__file__).parent.parent / "data" / "sdp" / "aiortc-1.16-offer.sdp").read_bytes()
    async with stack_factory(media_servers=1) as stack:
        url = f"{stack.signaling_url}/v1/calls"
        cases = [
            (offer, "text/plain", 415),
            (b"", "application/sdp", 400),
            (b"v=0\r\nnot sdp at all\r\n", "application/sdp", 400),
            (offer + b"a=x:" + b"y" * 70_000 + b"\r\n", "application/sdp", 413),
            (offer.replace(b"m=audio", b"m=video"), "application/sdp", 422),
        ]
        for body, content_type, status in cases:
            got, _, payload = await post(url, body, content_type)
            assert got == status, (status, payload)
            assert set(payload["error"]) == {"code", "message"}
        # Nothing reached the media server.
        assert (await get(f"{stack.media_url(0)}/healthz"))["sessions"] == 0

        # A valid offer makes a call; PATCH on it (trickle ICE, ICE restart) is refused.
        status, headers, _ = await post(url, offer, "application/sdp")
        assert status == 201
        call_url = stack.signaling_url + headers["Location"]
        async with aiohttp.ClientSession() as http:
            async with http.patch(call_url, data=offer) as response:
                assert response.status == 405
                assert "DELETE" in response.headers["Allow"]
                assert "ICE restart" in (await response.json())["error"]["message"]
            async with http.delete(call_url) as response:
                assert response.status == 204
        assert (await get(f"{stack.media_url(0)}/healthz"))["sessions"] == 0


async def test_a_crashed_media_server_costs_only_its_own_calls(stack_factory: StackFactory) -> None:
    async with stack_factory(media_servers=2) as stack:
        offer_url = f"{stack.signaling_url}/v1/calls"
        first = asyncio.gather(*(run_call(offer_url, seconds=8.0) for _ in range(4)))
        try:
            await asyncio.sleep(4.0)  # all connected and talking
            await stack.kill("media-2", signal.SIGKILL)
            await wait_for_healthy_backends(stack, 1)
            new_calls = await asyncio.gather(*(run_call(offer_url, seconds=3.0) for _ in range(2)))
        finally:
            old_calls = await first
        assert stack.child("relay").running and stack.child("media-1").running

    by_backend: dict[int, list[dict[str, Any]]] = {}
    for result in old_calls:
        by_backend.setdefault(result["backend"], []).append(result)
    assert set(by_backend) == {1, 2}
    for result in by_backend[1]:
        assert_good_call(result)
    for result in by_backend[2]:
        # The crashed server's calls went silent on the downlink from the kill on
        # (about 4 s before hang-up); the caller's ICE agent never says so.
        assert result["downlink"]["max_gap_ms"] > 3000, result["downlink"]
    for result in new_calls:
        assert result["ok"] and result["backend"] == 1, result


async def wait_for_healthy_backends(stack: Stack, count: int, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        body = await get(f"{stack.signaling_url}/v1/backends")
        healthy = [b for b in body["backends"] if b["health"] == "healthy"]
        if len(healthy) == count:
            return
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.2)


async def test_direct_topology_exposes_each_session_port(stack_factory: StackFactory) -> None:
    async with stack_factory(media_servers=1, topology="direct") as stack:
        assert "relay" not in stack.children and stack.relay_admin_urls() == {}
        result = await run_call(f"{stack.signaling_url}/v1/calls", seconds=CALL_SECONDS)
    assert_good_call(result)
    # The caller talked straight to the media server's socket (the shared one).
    assert result["remote_address"].split(":")[1] == str(result["server_view"]["local_port"])
    assert result["server_view"]["media_socket"] == "shared"


def test_stack_config_refuses_an_emulator_without_a_relay() -> None:
    from lab.stack import StackConfig, StackError

    with pytest.raises(StackError):
        Stack(StackConfig(topology="direct", netem=True))
    with pytest.raises(StackError, match="encap"):
        Stack(StackConfig(topology="direct", forward="encap"))
    with pytest.raises(StackError, match="forward"):
        Stack(StackConfig(forward="tunnel"))
