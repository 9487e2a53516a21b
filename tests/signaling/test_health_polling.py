"""Health polling against stand-ins that stop, come back and change identity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.signaling.conftest import StartSignaling, StartStandIn

SDP = {"Content-Type": "application/sdp"}
HANG_GUARD_S = 15.0


async def backend_states(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    return list((await (await client.get("/v1/backends")).json())["backends"])


async def wait_for_backends(
    client: TestClient[Any, Any], check: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Poll /v1/backends until ``check`` holds (the timeout only guards against a hang)."""
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            states = await backend_states(client)
            if check(states):
                return states
            await asyncio.sleep(0.02)


async def test_a_stopped_backend_becomes_unhealthy_and_healthy_again_when_back(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(
        first.url, second.url, health_interval_s=0.05, unhealthy_after_failures=2
    )
    states = await backend_states(client)
    assert [s["health"] for s in states] == ["healthy", "healthy"]

    await first.stop()
    states = await wait_for_backends(client, lambda s: s[0]["health"] == "unhealthy")
    assert states[0]["consecutive_failures"] >= 2 and states[0]["last_error"]
    assert states[1]["health"] == "healthy"
    assert (await (await client.get("/healthz")).json())["backends_healthy"] == 1
    response = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    assert response.headers["X-Rtclab-Backend"] == "2"
    assert first.offers_received == 0  # skipped, not tried and retried

    await first.start()  # the same port again
    states = await wait_for_backends(client, lambda s: s[0]["health"] == "healthy")
    assert states[0]["last_error"] is None
    # It has fewer sessions than the survivor now, so it takes the next call.
    response = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    assert response.headers["X-Rtclab-Backend"] == "1"


async def test_polls_follow_the_reported_session_count_and_identity(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url, health_interval_s=0.05)
    await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    backend.sessions.clear()  # the media server ended the session on its own
    await wait_for_backends(client, lambda s: s[0]["load"] == 0)

    await backend.stop()
    backend.backend_id = 9  # restarted with another configuration
    await backend.start()
    await wait_for_backends(client, lambda s: s[0]["backend_id"] == 9)
    response = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    assert response.headers["X-Rtclab-Backend"] == "9"
