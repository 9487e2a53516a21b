"""Calls whose forward is slow or times out: the caller can delete them, and signaling
deletes what it gave up waiting for, so nothing waits for the media server's setup timeout.

Through the real app and stand-in media servers; a slow stand-in is one that
takes longer to answer POST /sessions than signaling's forward timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.signaling.conftest import StartSignaling, StartStandIn

SDP = {"Content-Type": "application/sdp"}
CHOSEN = "my-call-0123456789abcdef"


async def abandoned(client: TestClient[Any, Any], outcome: str) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rtclab_signaling_sessions_abandoned_total" and sample.labels == {
                "outcome": outcome
            }:
                return float(sample.value)
    return 0.0


async def test_put_creates_a_call_under_the_callers_id(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)

    response = await client.put(f"/v1/calls/{CHOSEN}", data=offer_sdp, headers=SDP)

    assert response.status == 201
    assert response.headers["Location"] == f"/v1/calls/{CHOSEN}"
    assert (await client.get(f"/v1/calls/{CHOSEN}")).status == 200
    again = await client.put(f"/v1/calls/{CHOSEN}", data=offer_sdp, headers=SDP)
    assert again.status == 409 and (await again.json())["error"]["code"] == "call_exists"
    assert backend.offers_received == 1


async def test_put_refuses_an_id_outside_the_pattern(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    for bad in ("short", "x" * 65, "has.dots.in.it.and.more"):
        response = await client.put(f"/v1/calls/{bad}", data=offer_sdp, headers=SDP)
        assert response.status == 400 and (await response.json())["error"]["code"] == "bad_call_id"
    assert backend.offers_received == 0


async def test_every_attempt_names_the_session_id_signaling_chose(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    [asked] = backend.asked_ids
    assert len(asked) == 16 and all(c in "0123456789abcdef" for c in asked)


async def test_a_forward_that_times_out_is_deleted_on_its_media_server(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    slow = await standin(1)
    slow.post_delay_s = 5.0
    client = await signaling(slow.url, forward_timeout_s=0.3)

    response = await client.put(f"/v1/calls/{CHOSEN}", data=offer_sdp, headers=SDP)

    assert response.status == 503
    # Signaling told the media server to delete the session it had asked for.
    assert slow.deleted_unknown == slow.asked_ids and len(slow.asked_ids) == 1
    assert await abandoned(client, "absent") == 1
    # The caller can still see and delete the call it named.
    body = await (await client.get(f"/v1/calls/{CHOSEN}")).json()
    assert body["state"] == "failed" and body["session"] is None
    assert (await client.delete(f"/v1/calls/{CHOSEN}")).status == 204
    assert (await client.get(f"/v1/calls/{CHOSEN}")).status == 404


async def test_a_call_deleted_while_it_is_placed_leaves_nothing(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    slow = await standin(1)
    slow.post_delay_s = 0.5
    client = await signaling(slow.url)

    placing = asyncio.create_task(client.put(f"/v1/calls/{CHOSEN}", data=offer_sdp, headers=SDP))
    await asyncio.wait_for(slow.post_arrived.wait(), 10)
    body = await (await client.get(f"/v1/calls/{CHOSEN}")).json()
    assert body["state"] == "placing"
    assert (await client.delete(f"/v1/calls/{CHOSEN}")).status == 204

    response = await placing
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "call_deleted"
    # The session the stand-in created after the DELETE was deleted as soon as it answered.
    assert slow.sessions == {}
    assert (await client.get(f"/v1/calls/{CHOSEN}")).status == 404
