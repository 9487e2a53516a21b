"""Offers the media server refuses, and unknown sessions."""

from __future__ import annotations

import pytest

from tests.webrtc_server.conftest import StartMedia

SDP = {"Content-Type": "application/sdp"}


async def _error(response: object) -> tuple[int, str]:
    body = await response.json()  # type: ignore[attr-defined]
    return response.status, body["error"]["code"]  # type: ignore[attr-defined]


async def test_wrong_content_type_is_415(media: StartMedia, recorded_offer: str) -> None:
    client = await media()
    response = await client.post(
        "/sessions", data=recorded_offer, headers={"Content-Type": "text/plain"}
    )
    assert await _error(response) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    ["", "not sdp at all", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"],
    ids=["empty", "garbage", "no-media"],
)
async def test_empty_or_malformed_sdp_is_400(media: StartMedia, body: str) -> None:
    client = await media()
    response = await client.post("/sessions", data=body, headers=SDP)
    assert await _error(response) == (400, "malformed")


async def test_no_audio_section_is_422(media: StartMedia, recorded_offer: str) -> None:
    client = await media()
    no_audio = (
        recorded_offer.split("m=audio")[0]
        + "m=application"
        + recorded_offer.split("m=application")[1]
    )
    response = await client.post("/sessions", data=no_audio, headers=SDP)
    assert await _error(response) == (422, "no_audio")


async def test_an_offer_aiortc_cannot_use_is_422_and_leaves_nothing(
    media: StartMedia, recorded_offer: str
) -> None:
    client = await media()
    # Audio with no codec aiortc knows.
    unusable = recorded_offer.replace(
        "m=audio 40268 UDP/TLS/RTP/SAVPF 96 9 0 8", "m=audio 40268 UDP/TLS/RTP/SAVPF 120"
    )
    unusable = "\r\n".join(
        line for line in unusable.splitlines() if not line.startswith("a=rtpmap:")
    )
    response = await client.post("/sessions", data=unusable + "\r\n", headers=SDP)
    status, code = await _error(response)
    assert (status, code) == (422, "unsupported_offer")
    assert await (await client.get("/sessions")).json() == []


async def test_oversized_offer_is_413(media: StartMedia, recorded_offer: str) -> None:
    client = await media()
    huge = recorded_offer + "a=x-padding:" + "x" * (70 * 1024) + "\r\n"
    response = await client.post("/sessions", data=huge, headers=SDP)
    assert response.status == 413


async def test_unknown_session_is_404(media: StartMedia) -> None:
    client = await media()
    assert await _error(await client.get("/sessions/nope")) == (404, "session_not_found")
    assert await _error(await client.delete("/sessions/nope")) == (404, "session_not_found")
