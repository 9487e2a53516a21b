"""Offer preparation and answer rewriting (pure text)."""

from __future__ import annotations

import pytest

from webrtc_server.core.answer import local_answer, prepare_offer, wire_answer
from wire import sdp


def test_prepared_offer_has_no_candidates_and_no_end_of_candidates(recorded_offer: str) -> None:
    assert "a=candidate:" in recorded_offer and "a=end-of-candidates" in recorded_offer
    prepared = prepare_offer(recorded_offer)
    assert "a=candidate:" not in prepared.sdp
    assert "a=end-of-candidates" not in prepared.sdp
    assert prepared.setup == "actpass"
    assert prepared.kinds == ("audio", "application")
    # Everything else survives: credentials, fingerprints, codecs.
    assert sdp.ice_credentials(prepared.sdp) == sdp.ice_credentials(recorded_offer)
    assert "a=rtpmap:96 opus/48000/2" in prepared.sdp


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "malformed"),
        ("hello", "malformed"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "malformed"),
        (
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:abcd\r\n"
            "a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaa\r\na=fingerprint:sha-256 00\r\n",
            "no_audio",
        ),
    ],
)
def test_unusable_offers_are_named(text: str, code: str) -> None:
    with pytest.raises(sdp.SdpError) as raised:
        prepare_offer(text)
    assert raised.value.code == code


def _aiortc_style_answer() -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 40000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\n"
        "a=candidate:abc 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
        "a=ice-ufrag:AQABsrCL6gSzLsCRgGht\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "a=fingerprint:sha-256 AA:BB\r\na=fingerprint:sha-384 CC\r\na=fingerprint:sha-512 DD\r\n"
        "a=setup:active\r\n"
        "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"
        "a=mid:1\r\na=sctp-port:5000\r\n"
        "a=candidate:abc 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
        "a=fingerprint:sha-256 AA:BB\r\na=fingerprint:sha-384 CC\r\na=setup:active\r\n"
    )


def test_local_answer_takes_the_passive_role_only_for_actpass() -> None:
    created = _aiortc_style_answer()
    assert "a=setup:active" not in local_answer(created, "actpass")
    assert local_answer(created, "actpass").count("a=setup:passive") == 2
    # An offer that insists on a role keeps aiortc's answer to it.
    assert local_answer(created, "passive").count("a=setup:active") == 2


def test_wire_answer_has_one_candidate_per_section_at_the_given_address() -> None:
    answer = wire_answer(_aiortc_style_answer(), ("203.0.113.10", 3478), "actpass")
    candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
    assert candidates == ["a=candidate:1 1 udp 2130706431 203.0.113.10 3478 typ host"] * 2
    assert answer.count("a=end-of-candidates") == 2
    assert "127.0.0.1" not in answer
    fingerprints = [line for line in answer.splitlines() if line.startswith("a=fingerprint:")]
    assert fingerprints == ["a=fingerprint:sha-256 AA:BB"] * 2
    assert "a=setup:active" not in answer
    assert sdp.ice_credentials(answer)[0] == "AQABsrCL6gSzLsCRgGht"
