"""Input errors and unsupported methods, through the real app and a stand-in backend.

Every rejected offer must be refused before any media server sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling.core.offer import MAX_OFFER_BYTES
from tests.signaling.conftest import StartSignaling, StartStandIn
from tests.signaling.standin import StandInMediaServer


@pytest.fixture
async def backend(standin: StartStandIn) -> StandInMediaServer:
    return await standin(1)


@pytest.fixture
async def client(signaling: StartSignaling, backend: StandInMediaServer) -> TestClient[Any, Any]:
    return await signaling(backend.url)


async def error_of(response: Any) -> tuple[int, str]:
    body = await response.json()
    assert set(body["error"]) == {"code", "message"}
    return response.status, body["error"]["code"]


SDP = {"Content-Type": "application/sdp"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
async def test_wrong_content_type_is_415(
    client: TestClient[Any, Any], backend: StandInMediaServer, offer_sdp: str, content_type: str
) -> None:
    response = await client.post(
        "/v1/calls", data=offer_sdp, headers={"Content-Type": content_type}
    )
    assert await error_of(response) == (415, "unsupported_media_type")
    assert response.headers["Accept-Post"] == "application/sdp"
    assert backend.offers_received == 0


async def test_missing_content_type_is_415(client: TestClient[Any, Any], offer_sdp: str) -> None:
    response = await client.post(
        "/v1/calls", data=offer_sdp.encode(), skip_auto_headers=["Content-Type"]
    )
    assert await error_of(response) == (415, "unsupported_media_type")


async def test_empty_offer_is_400(
    client: TestClient[Any, Any], backend: StandInMediaServer
) -> None:
    response = await client.post("/v1/calls", data=b"", headers=SDP)
    assert await error_of(response) == (400, "empty_offer")
    assert backend.offers_received == 0


@pytest.mark.parametrize("body", ["hello, I am not SDP", "v=0\r\nthis is not sdp\r\n"])
async def test_malformed_offer_is_400(
    client: TestClient[Any, Any], backend: StandInMediaServer, body: str
) -> None:
    response = await client.post("/v1/calls", data=body, headers=SDP)
    assert await error_of(response) == (400, "malformed")
    assert backend.offers_received == 0


async def test_offer_without_audio_is_422(
    client: TestClient[Any, Any], backend: StandInMediaServer, offer_sdp: str
) -> None:
    video_only = offer_sdp.replace("m=audio", "m=video")
    response = await client.post("/v1/realtime/calls", data=video_only, headers=SDP)
    assert await error_of(response) == (422, "no_audio")
    assert backend.offers_received == 0


def padded(offer_sdp: str, size: int) -> bytes:
    """A valid offer made ``size`` bytes long with an extra attribute line."""
    filler = size - len(offer_sdp.encode()) - len("a=x-pad:\r\n")
    return (offer_sdp + "a=x-pad:" + "p" * filler + "\r\n").encode()


async def test_offer_of_exactly_the_limit_is_accepted(
    client: TestClient[Any, Any], backend: StandInMediaServer, offer_sdp: str
) -> None:
    body = padded(offer_sdp, MAX_OFFER_BYTES)
    assert len(body) == MAX_OFFER_BYTES
    response = await client.post("/v1/calls", data=body, headers=SDP)
    assert response.status == 201
    assert backend.offers_received == 1


async def test_offer_over_the_limit_is_413(
    client: TestClient[Any, Any], backend: StandInMediaServer, offer_sdp: str
) -> None:
    response = await client.post(
        "/v1/calls", data=padded(offer_sdp, MAX_OFFER_BYTES + 1), headers=SDP
    )
    assert await error_of(response) == (413, "offer_too_large")
    assert backend.offers_received == 0


async def test_chunked_offer_over_the_limit_is_413(
    client: TestClient[Any, Any], backend: StandInMediaServer, offer_sdp: str
) -> None:
    body = padded(offer_sdp, MAX_OFFER_BYTES + 4096)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until too big
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post("/v1/calls", data=chunks(), headers=SDP)
    assert await error_of(response) == (413, "offer_too_large")
    assert backend.offers_received == 0


async def test_patch_is_405_and_says_renegotiation_is_not_supported(
    client: TestClient[Any, Any], offer_sdp: str
) -> None:
    created = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    assert created.status == 201
    location = created.headers["Location"]
    response = await client.patch(
        location,
        data="a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    )
    assert await error_of(response) == (405, "not_supported")
    assert response.headers["Allow"] == "GET, DELETE"
    message = (await response.json())["error"]["message"]
    assert "trickle ICE" in message and "ICE restart" in message


@pytest.mark.parametrize("method", ["POST", "HEAD", "OPTIONS"])
async def test_other_methods_on_a_call_are_405_with_allow(
    client: TestClient[Any, Any], offer_sdp: str, method: str
) -> None:
    created = await client.post("/v1/calls", data=offer_sdp, headers=SDP)
    response = await client.request(method, created.headers["Location"])
    assert response.status == 405
    assert response.headers["Allow"] == "GET, PUT, DELETE"


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/realtime/calls"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_only_post_on_the_collection(
    client: TestClient[Any, Any], path: str, method: str
) -> None:
    response = await client.request(method, path)
    assert await error_of(response) == (405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH"])
async def test_unknown_call_is_404(client: TestClient[Any, Any], method: str) -> None:
    response = await client.request(method, "/v1/calls/call_nonexistent")
    assert await error_of(response) == (404, "call_not_found")
