"""What a media server refuses so that abandoned offers cannot pile up, and the
gauges that show it let go of everything: through the real app and aiortc offers."""

from __future__ import annotations

from typing import Any

from tests.webrtc_server.conftest import MakeOffer, StartMedia, eventually

SDP = {"Content-Type": "application/sdp"}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


async def metrics(client: Any) -> str:
    return str(await (await client.get("/metrics")).text())


async def test_pending_setups_are_bounded_with_a_clear_503(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media(max_pending_setups=2, setup_timeout_s=1.0)
    _pc, offer = await make_offer()
    for _ in range(2):  # callers that never arrive
        assert (await client.post("/sessions", data=offer, headers=SDP)).status == 201
    text = await metrics(client)
    assert metric(text, "rtclab_media_pending_setups") == 2
    assert metric(text, "rtclab_media_peer_connections") == 2

    refused = await client.post("/sessions", data=offer, headers=SDP)

    assert refused.status == 503
    assert refused.headers["Retry-After"] == "2"
    body = await refused.json()
    assert body["error"]["code"] == "too_many_pending_setups"
    text = await metrics(client)
    assert metric(text, 'rtclab_media_offers_rejected_total{code="too_many_pending_setups"}') == 1

    # Their setup timeout frees the slots and every peer connection.
    async def drained() -> bool:
        text = await metrics(client)
        return metric(text, "rtclab_media_pending_setups") == 0 and (
            metric(text, "rtclab_media_peer_connections") == 0
        )

    await eventually(drained)
    assert (await client.post("/sessions", data=offer, headers=SDP)).status == 201


async def test_a_session_takes_the_id_signaling_chose(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media()
    _pc, offer = await make_offer()
    headers = {**SDP, "X-Rtclab-Session-Id": "0123456789abcdef"}

    response = await client.post("/sessions", data=offer, headers=headers)

    assert response.status == 201
    assert response.headers["Location"] == "/sessions/0123456789abcdef"
    again = await client.post("/sessions", data=offer, headers=headers)
    assert again.status == 409 and (await again.json())["error"]["code"] == "session_exists"
    bad = await client.post("/sessions", data=offer, headers={**SDP, "X-Rtclab-Session-Id": "../x"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "bad_session_id"


async def test_an_id_deleted_before_its_session_existed_is_never_created(
    media: StartMedia, make_offer: MakeOffer
) -> None:
    client = await media()
    _pc, offer = await make_offer()
    # Signaling gave up on a slow POST and deleted the id it had asked for...
    assert (await client.delete("/sessions/fedcba9876543210")).status == 404
    # ...and then the POST arrives.
    late = await client.post(
        "/sessions", data=offer, headers={**SDP, "X-Rtclab-Session-Id": "fedcba9876543210"}
    )
    assert late.status == 409 and (await late.json())["error"]["code"] == "session_deleted"
    assert metric(await metrics(client), "rtclab_media_peer_connections") == 0


async def test_every_server_reports_its_open_files_sockets_threads_and_tasks(
    media: StartMedia,
) -> None:
    client = await media()
    text = await metrics(client)
    for name in (
        "rtclab_process_open_fds",
        "rtclab_process_sockets",
        "rtclab_process_threads",
        "rtclab_asyncio_tasks",
    ):
        assert metric(text, name) >= 1, name
    assert metric(text, "rtclab_process_sockets") < metric(text, "rtclab_process_open_fds")
