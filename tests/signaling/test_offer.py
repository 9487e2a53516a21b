"""Pure offer checks: each maps to the status and code a caller sees."""

from __future__ import annotations

import pytest

from signaling.core import offer
from wire.service import ApiError


@pytest.mark.parametrize(
    "header", ["application/sdp", "Application/SDP", "application/sdp; charset=utf-8"]
)
def test_sdp_content_types_pass(header: str) -> None:
    offer.check_headers(header, content_length=100)


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/json", "application/sdpx"])
def test_other_content_types_are_415(header: str | None) -> None:
    with pytest.raises(ApiError) as info:
        offer.check_headers(header, content_length=100)
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")
    assert info.value.headers["Accept-Post"] == "application/sdp"


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    offer.check_headers("application/sdp", content_length=offer.MAX_OFFER_BYTES)
    with pytest.raises(ApiError) as info:
        offer.check_headers("application/sdp", content_length=offer.MAX_OFFER_BYTES + 1)
    assert info.value.status == 413


def test_a_body_over_the_limit_is_413() -> None:
    with pytest.raises(ApiError) as info:
        offer.parse_offer(b"v=0\r\n" * 10, max_bytes=20)
    assert (info.value.status, info.value.code) == (413, "offer_too_large")


def test_a_real_offer_passes(offer_sdp: str) -> None:
    assert offer.parse_offer(offer_sdp.encode()) == offer_sdp


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "empty_offer"),
        (b" \r\n", 400, "empty_offer"),
        (b"hello", 400, "malformed"),
        (b"v=0\r\n\xff\xfe", 400, "malformed"),
        (b"v=0\r\ns=-\r\n", 400, "malformed"),
    ],
)
def test_bad_bodies(body: bytes, status: int, code: str) -> None:
    with pytest.raises(ApiError) as info:
        offer.parse_offer(body)
    assert (info.value.status, info.value.code) == (status, code)


def test_an_offer_without_audio_is_422(offer_sdp: str) -> None:
    with pytest.raises(ApiError) as info:
        offer.parse_offer(offer_sdp.replace("m=audio", "m=video").encode())
    assert (info.value.status, info.value.code) == (422, "no_audio")
