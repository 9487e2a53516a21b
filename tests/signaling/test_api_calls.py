"""Placing, inspecting and ending calls through the real app and stand-in media servers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.signaling.conftest import StartSignaling, StartStandIn, closed_port_url

SDP = {"Content-Type": "application/sdp"}


async def call(client: TestClient[Any, Any], offer: str, path: str = "/v1/calls") -> Any:
    return await client.post(path, data=offer, headers=SDP)


async def metric(client: TestClient[Any, Any], name: str, **labels: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def backends_json(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    response = await client.get("/v1/backends")
    assert response.status == 200
    body = await response.json()
    return list(body["backends"])


async def test_a_call_is_created_with_the_backends_answer(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(11)
    client = await signaling(backend.url)
    response = await call(client, offer_sdp)
    assert response.status == 201
    assert response.content_type == "application/sdp"
    assert await response.text() == backend.answer_for("s1")
    assert response.headers["X-Rtclab-Backend"] == "11"
    location = response.headers["Location"]
    assert location.startswith("/v1/calls/call_")
    assert backend.sessions == {"s1": offer_sdp}  # the offer was forwarded unchanged
    assert await metric(client, "rtclab_signaling_calls_created_total", backend="11") == 1


async def test_the_alias_creates_calls_too(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    response = await call(client, offer_sdp, "/v1/realtime/calls")
    assert response.status == 201
    assert response.headers["Location"].startswith("/v1/calls/")
    assert (await client.get(response.headers["Location"])).status == 200


async def test_calls_spread_over_two_backends(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(first.url, second.url)
    served = [(await call(client, offer_sdp)).headers["X-Rtclab-Backend"] for _ in range(4)]
    # Fewest sessions wins; ties go to the backend listed first.
    assert served == ["1", "2", "1", "2"]
    assert len(first.sessions) == len(second.sessions) == 2


async def test_a_concurrent_burst_spreads_too(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(first.url, second.url)
    responses = await asyncio.gather(*(call(client, offer_sdp) for _ in range(6)))
    assert [r.status for r in responses] == [201] * 6
    assert len(first.sessions) == len(second.sessions) == 3


async def test_the_backend_with_fewer_sessions_wins(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    busy, idle = await standin(1), await standin(2)
    busy.sessions.update({"old1": "", "old2": ""})  # reported by /healthz at startup
    client = await signaling(busy.url, idle.url)
    served = [(await call(client, offer_sdp)).headers["X-Rtclab-Backend"] for _ in range(3)]
    assert served == ["2", "2", "1"]


async def test_a_backend_answering_500_is_retried_on_the_next(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    broken, good = await standin(1), await standin(2)
    broken.fail_posts_with = 500
    client = await signaling(broken.url, good.url)
    response = await call(client, offer_sdp)
    assert response.status == 201
    assert response.headers["X-Rtclab-Backend"] == "2"
    assert broken.offers_received == 1 and len(good.sessions) == 1
    assert await metric(client, "rtclab_signaling_placement_retries_total") == 1
    assert (
        await metric(
            client, "rtclab_signaling_forward_failures_total", backend="1", reason="backend_error"
        )
        == 1
    )


async def test_a_backend_that_went_away_is_retried_on_the_next_and_taken_out(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    gone, good = await standin(1), await standin(2)
    client = await signaling(gone.url, good.url)
    await gone.stop()  # healthy at the last poll, refusing connections now
    response = await call(client, offer_sdp)
    assert response.status == 201
    assert response.headers["X-Rtclab-Backend"] == "2"
    states = {b["backend_id"]: b for b in await backends_json(client)}
    assert states[1]["health"] == "unhealthy"
    assert states[1]["last_error"]
    # The next call does not try it again.
    assert (await call(client, offer_sdp)).headers["X-Rtclab-Backend"] == "2"
    assert await metric(client, "rtclab_signaling_placement_retries_total") == 1


async def test_all_backends_down_is_503_with_retry_after(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(first.url, second.url, health_interval_s=2.5)
    first.fail_posts_with = 500
    await second.stop()
    response = await call(client, offer_sdp)
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    body = await response.json()
    assert body["error"]["code"] == "no_backend_available"
    assert "backend_error" in body["error"]["message"]
    assert "unreachable" in body["error"]["message"]
    assert (
        await metric(client, "rtclab_signaling_placement_failures_total", reason="all_failed") == 1
    )


async def test_no_healthy_backend_at_all_is_503_with_retry_after(
    signaling: StartSignaling, offer_sdp: str
) -> None:
    client = await signaling(closed_port_url())
    response = await call(client, offer_sdp)
    assert response.status == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert (
        await metric(client, "rtclab_signaling_placement_failures_total", reason="no_candidates")
        == 1
    )
    health = await (await client.get("/healthz")).json()
    assert health["backends"] == 1 and health["backends_healthy"] == 0


async def test_a_draining_backend_is_skipped(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    draining, good = await standin(1), await standin(2)
    draining.draining = True
    client = await signaling(draining.url, good.url)
    for _ in range(2):
        assert (await call(client, offer_sdp)).headers["X-Rtclab-Backend"] == "2"
    assert draining.offers_received == 0


async def test_a_backend_that_starts_draining_between_polls_is_retried_and_skipped(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    draining, good = await standin(1), await standin(2)
    client = await signaling(draining.url, good.url)
    draining.draining = True  # signaling has not polled since
    assert (await call(client, offer_sdp)).headers["X-Rtclab-Backend"] == "2"
    assert (await call(client, offer_sdp)).headers["X-Rtclab-Backend"] == "2"
    assert draining.offers_received == 1
    states = {b["backend_id"]: b for b in await backends_json(client)}
    assert states[1]["draining"] is True and states[1]["health"] == "healthy"


async def test_a_backends_4xx_about_the_offer_is_passed_on_not_retried(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    picky, other = await standin(1), await standin(2)
    picky.fail_posts_with = 422
    client = await signaling(picky.url, other.url)
    response = await call(client, offer_sdp)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "stand_in_failure"
    assert other.offers_received == 0


async def test_get_shows_the_record_and_the_live_session(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(first.url, second.url)
    await call(client, offer_sdp)
    location = (await call(client, offer_sdp)).headers["Location"]
    response = await client.get(location)
    assert response.status == 200
    body = await response.json()
    assert body["call_id"] == location.rsplit("/", 1)[1]
    assert body["backend"] == 2
    assert body["media_url"] == second.url
    assert body["session_path"] == "/sessions/s1"
    assert body["created"].endswith("Z")
    assert body["session"] == {"id": "s1", "backend_id": 2, "state": "new"}
    assert body["session_error"] is None


async def test_get_says_why_the_session_is_missing(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    location = (await call(client, offer_sdp)).headers["Location"]
    backend.sessions.clear()  # the media server ended it on its own
    body = await (await client.get(location)).json()
    assert body["session"] is None and body["session_error"]["code"] == "ended"
    await backend.stop()
    body = await (await client.get(location)).json()
    assert body["backend"] == 1
    assert body["session"] is None and body["session_error"]["code"] == "unreachable"


async def test_delete_reaches_the_backend_that_holds_the_call(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    client = await signaling(first.url, second.url)
    on_first = (await call(client, offer_sdp)).headers["Location"]
    on_second = (await call(client, offer_sdp)).headers["Location"]
    response = await client.delete(on_second)
    assert response.status == 204
    assert second.deleted == ["s1"] and first.deleted == []
    assert (await client.get(on_second)).status == 404
    assert (await client.delete(on_second)).status == 404
    assert (await client.get(on_first)).status == 200
    assert await metric(client, "rtclab_signaling_calls_deleted_total", backend="2") == 1


async def test_delete_of_a_session_the_backend_already_ended_is_204(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    location = (await call(client, offer_sdp)).headers["Location"]
    backend.sessions.clear()
    assert (await client.delete(location)).status == 204
    assert (await client.get(location)).status == 404


async def test_delete_with_the_backend_unreachable_is_502_and_can_be_retried(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    backend = await standin(1)
    client = await signaling(backend.url)
    location = (await call(client, offer_sdp)).headers["Location"]
    await backend.stop()
    response = await client.delete(location)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "backend_unreachable"
    await backend.start()  # same port, and (a test double) the same sessions
    assert (await client.delete(location)).status == 204
    assert backend.deleted == ["s1"]


async def test_backends_healthz_and_metrics_describe_the_service(
    signaling: StartSignaling, standin: StartStandIn, offer_sdp: str
) -> None:
    first, second = await standin(1), await standin(2)
    second.draining = True
    dead = closed_port_url()
    client = await signaling(first.url, second.url, dead)
    await call(client, offer_sdp)

    backends = await backends_json(client)
    assert [b["url"] for b in backends] == [first.url, second.url, dead]
    assert [b["health"] for b in backends] == ["healthy", "healthy", "unknown"]
    assert [b["draining"] for b in backends] == [False, True, False]
    assert backends[0]["backend_id"] == 1 and backends[0]["load"] == 1
    assert backends[2]["backend_id"] is None and backends[2]["last_error"]

    health = await (await client.get("/healthz")).json()
    assert health == {
        "status": "ok",
        "backends": 3,
        "backends_healthy": 2,
        "backends_accepting": 1,
        "calls": 1,
    }
    assert await metric(client, "rtclab_signaling_backends_healthy") == 2
    assert await metric(client, "rtclab_signaling_calls_tracked") == 1
    count = await metric(
        client,
        "rtclab_signaling_request_duration_seconds_count",
        route="/v1/calls",
        method="POST",
        status="201",
    )
    assert count == 1
