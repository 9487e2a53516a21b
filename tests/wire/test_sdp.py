from __future__ import annotations

from pathlib import Path

import pytest

from wire import sdp
from wire.sdp import SdpError

OFFER = (Path(__file__).parent.parent / "data" / "sdp" / "aiortc-1.16-offer.sdp").read_text()


def test_parse_finds_sections_and_attributes() -> None:
    description = sdp.parse(OFFER)
    assert description.kinds == ("audio", "application")
    assert description.attribute("group") == "BUNDLE 0 1"
    assert description.attribute("setup") == "actpass"
    audio = description.media[0]
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.attribute("rtcp-mux") == ""
    assert audio.attribute("nonexistent") is None


def test_validate_offer_accepts_a_real_offer() -> None:
    assert sdp.validate_offer(OFFER).kinds[0] == "audio"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "malformed"),
        ("hello world", "malformed"),
        ("v=0\r\nthis is not sdp\r\n", "malformed"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "malformed"),
        ("v=0\r\nm=audio x RTP/AVP 0\r\n", "malformed"),
    ],
)
def test_validate_offer_rejects_malformed(text: str, code: str) -> None:
    with pytest.raises(SdpError) as info:
        sdp.validate_offer(text)
    assert info.value.code == code


def test_validate_offer_rejects_video_only() -> None:
    video_only = OFFER.replace("m=audio", "m=video")
    with pytest.raises(SdpError) as info:
        sdp.validate_offer(video_only)
    assert info.value.code == "no_audio"


def test_validate_offer_requires_ice_credentials() -> None:
    stripped = "".join(
        line for line in OFFER.splitlines(keepends=True) if not line.startswith("a=ice-")
    )
    with pytest.raises(SdpError, match="ICE credentials"):
        sdp.validate_offer(stripped)


def test_strip_candidates_removes_candidates_and_end_marker_only() -> None:
    stripped = sdp.strip_candidates(OFFER)
    assert "a=candidate" not in stripped
    assert "a=end-of-candidates" not in stripped
    assert stripped.count("a=ice-ufrag:") == 2
    assert stripped.endswith("\r\n") and "\n" not in stripped.replace("\r\n", "")


def test_set_single_candidate_points_every_section_at_one_address() -> None:
    edited = sdp.set_single_candidate(OFFER, "127.0.0.1", 3478)
    lines = edited.split("\r\n")
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    assert candidates == ["a=candidate:1 1 udp 2130706431 127.0.0.1 3478 typ host"] * 2
    assert lines.count("a=end-of-candidates") == 2
    assert all(line.split()[1] == "3478" for line in lines if line.startswith("m="))
    assert all(line == "c=IN IP4 127.0.0.1" for line in lines if line.startswith("c="))


def test_set_single_candidate_leaves_rejected_sections_at_port_zero() -> None:
    rejected = OFFER.replace("m=application 34415", "m=application 0")
    edited = sdp.set_single_candidate(rejected, "127.0.0.1", 3478)
    assert "m=application 0 " in edited


def test_answer_setup_is_passive_only_for_actpass_offers() -> None:
    answer = OFFER.replace("a=setup:actpass", "a=setup:active")
    assert "a=setup:passive" in sdp.answer_setup(answer, "actpass")
    assert "a=setup:passive" not in sdp.answer_setup(answer, "passive")
    assert sdp.offer_setup(OFFER) == "actpass"


def test_only_sha256_fingerprints_remain() -> None:
    edited = sdp.only_sha256_fingerprints(OFFER)
    fingerprints = [line for line in edited.split("\r\n") if line.startswith("a=fingerprint:")]
    assert len(fingerprints) == 2
    assert all(line.startswith("a=fingerprint:sha-256 ") for line in fingerprints)


def test_ice_credentials() -> None:
    assert sdp.ice_credentials(OFFER) == ("bAaa", "8TObhlzAeDkdzRVFEQrT0f")


# --- found by fuzzing (fuzz/targets/sdp.py); each input is in fuzz/regressions/ ---


@pytest.mark.parametrize(
    "boundary", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"]
)
def test_a_candidate_behind_any_line_boundary_aiortc_knows_is_stripped(boundary: str) -> None:
    from aiortc.sdp import SessionDescription as AiortcDescription

    hidden = f"a=mid:0{boundary}a=candidate:1 1 udp 2130706431 192.0.2.99 9 typ host"
    offer = OFFER.replace("a=mid:0", hidden, 1)
    assert any(
        c.ip == "192.0.2.99" for m in AiortcDescription.parse(offer).media for c in m.ice_candidates
    )

    stripped = sdp.strip_candidates(offer)

    assert not [c for m in AiortcDescription.parse(stripped).media for c in m.ice_candidates]


@pytest.mark.parametrize("port", ["²", "١٢٣", "9" * 5000, "65536"])
def test_a_media_port_that_is_not_an_ascii_port_number_is_malformed(port: str) -> None:
    with pytest.raises(SdpError) as info:
        sdp.parse(f"v=0\r\nm=audio {port} UDP/TLS/RTP/SAVPF 111\r\n")
    assert info.value.code == "malformed"


def test_setting_the_candidate_survives_a_media_line_without_a_port() -> None:
    text = sdp.set_single_candidate("v=0\r\nm=\r\na=mid:0\r\n", "192.0.2.1", 3478)
    assert "a=candidate:1 1 udp 2130706431 192.0.2.1 3478 typ host" in text
