"""FFmpeg's WHIP muxer (RFC 9725) publishing the caller's voice through the relay.

FFmpeg comes from the PyPI package ``imageio-ffmpeg`` (the ``test`` extra).
It only sends, so the agent's answer shows on the server: its session's agent
starts a response once the caller's utterance ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.callers import ffmpeg_whip
from lab.stack import Stack, StackConfig
from tests.interop.live import get, relay_view_while_live, skip_or_fail

CALL_SECONDS = 5.0
MIN_PACKETS = 200  # a 5 s publish carries ~250 Opus frames


@pytest.fixture(scope="session")
def whip_ffmpeg() -> None:
    problem = ffmpeg_whip.whip_problem()
    if problem is not None:
        skip_or_fail(f"{problem}; it comes with `pip install -e .[test]`")


@pytest.mark.e2e
@pytest.mark.parametrize("forward", ["nat", "encap"])
async def test_ffmpeg_publishes_over_whip_through_the_relay(
    whip_ffmpeg: None, forward: str, tmp_path: Path
) -> None:
    driver = ffmpeg_whip.DRIVER
    config = StackConfig(media_servers=1, forward=forward, log_dir=tmp_path / "logs")
    async with Stack(config) as stack:
        call = asyncio.create_task(
            driver.call(f"{stack.signaling_url}/v1/calls", seconds=CALL_SECONDS)
        )
        flows, session = await relay_view_while_live(stack, call, both_ways=False)
        result = await call
        closed = await get(f"{stack.media_url(0)}/sessions?closed=1")

    assert result["ok"], (result["error"], result["ffmpeg_problems"])
    assert result["backend"] == 1 and result["call_id"], result
    for phase in ("answer", "ice_connected", "dtls_connected"):
        assert result["setup_ms"][phase] is not None, (phase, result["setup_ms"])
    # Up: what the server received of FFmpeg's Opus.
    assert result["uplink"]["packets_received"] > MIN_PACKETS, result["uplink"]
    assert result["uplink"]["packets_lost"] == 0, result["uplink"]
    # The agent heard the utterance end and started its answer (which a send-only
    # publisher never hears).
    assert result["agent"]["phase"] in ("thinking", "speaking") or result["agent"]["turns"]

    # One flow, and the media server's peer is that flow's upstream: the relay's socket
    # (nat) or FFmpeg's own address (encap).
    assert len(flows) == 1, flows
    assert session["remote"] == flows[0]["upstream"], (session, flows)
    assert (session["remote"] == flows[0]["client"]) == (forward == "encap"), (session, flows)
    assert result["remote_address"] == f"{stack.relay_address[0]}:{stack.relay_address[1]}"
    # FFmpeg stopped cleanly and DELETEd its resource.
    assert [s["close_reason"] for s in closed] == ["deleted"], closed


# Lines from real runs of imageio-ffmpeg's FFmpeg 9.0.2 against this stack
# (``-loglevel verbose``; component tags as FFmpeg prints them).
TAG = "[WHIP muxer @ 0x5631671d2a80] "
PUBLISH_LOG = [
    TAG + "Init state=1, handshake_timeout=5000ms, pkt_size=1200, seed=-98, elapsed=4.54ms",
    TAG + "SDP state=4, offer=549B, answer=670B, ufrag=AQAB0MvWNPYWj92yCnE7, pwd=24B, "
    "transport=udp://127.0.0.1:48033, elapsed=46.00ms",
    TAG + "ICE STUN ok, state=7, url=udp://127.0.0.1:48033, "
    "location=http://127.0.0.1:49673/v1/calls/call_01615e79c201bf4299b61e8a, "
    "username=AQAB0MvWNPYWj92yCnE7:5f32e5ec, res=-11B, elapsed=108.03ms",
    TAG + "DTLS handshake is done, elapsed=120.93ms",
    TAG + "Muxer state=10, buffer_size=4096, max_packet_size=1184, elapsed=121.32ms"
    "(init:4.54,offer:0.23,answer:41.23,udp:0.17,ice:61.85,dtls:12.90,srtp:0.21)",
    TAG + "Failed to read response from DELETE "
    "url=http://127.0.0.1:49673/v1/calls/call_01615e79c201bf4299b61e8a",
    TAG + "Failed to dispose resource, ret=-5",
    "[out#0/whip @ 0x5631671d2440]   Output stream #0:0 (audio): 276 frames encoded "
    "(264192 samples); 276 packets muxed (49042 bytes); ",
    "[in#0/lavfi @ 0x5631671b3f00]   Input stream #0:0 (audio): 259 packets read "
    "(2121728 bytes); 258 frames decoded; 0 decode errors (264192 samples); ",
]


def test_whip_log_reads_setup_times_location_and_counts() -> None:
    whip = ffmpeg_whip.WhipLog()
    for line in PUBLISH_LOG:
        whip.feed(line)
    assert whip.answered and whip.connected
    assert whip.location == "http://127.0.0.1:49673/v1/calls/call_01615e79c201bf4299b61e8a"
    assert whip.remote == "127.0.0.1:48033"
    assert whip.packets_muxed == 276
    # From the POST: answer; + UDP and ICE; + DTLS and SRTP keying.
    assert whip.setup_ms() == {"answer": 41.2, "ice_connected": 103.2, "dtls_connected": 116.4}
    assert whip.post_offset_ms() == pytest.approx(4.77)
    assert whip.hang_up == "failed"
    # Option echoes and "0 decode errors" are not problems.
    assert whip.problems == [
        "Failed to read response from DELETE "
        "url=http://127.0.0.1:49673/v1/calls/call_01615e79c201bf4299b61e8a",
        "Failed to dispose resource, ret=-5",
    ]


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (
            "[http @ 0x7f621c060000] HTTP error 404 Not Found\n"
            "[WHIP muxer @ 0x55cd7077a080] Failed to request url=http://127.0.0.1:35461/nope, "
            "offer: v=0",
            "offer_rejected: HTTP 404 Not Found",
        ),
        (
            "[tcp @ 0x7f94c808adc0] Connection to tcp://127.0.0.1:9 failed: Connection refused\n"
            "[WHIP muxer @ 0x560677634080] Failed to request url=http://127.0.0.1:9/v1/calls",
            "unreachable: Connection to tcp://127.0.0.1:9 failed: Connection refused",
        ),
        (
            "[WHIP muxer @ 0x1] SDP state=4, offer=549B, answer=670B, ufrag=x, pwd=24B, "
            "transport=udp://127.0.0.1:48033, elapsed=46.00ms\n"
            "[WHIP muxer @ 0x1] DTLS handshake timeout=5000ms, cost=5001.00ms, "
            "elapsed=5100.00ms, state=8",
            "connection_failed: DTLS handshake timeout=5000ms, cost=5001.00ms, "
            "elapsed=5100.00ms, state=8",
        ),
    ],
    ids=["rejected", "refused", "dtls-timeout"],
)
def test_whip_log_names_why_a_publish_never_connected(log: str, error: str) -> None:
    whip = ffmpeg_whip.WhipLog()
    for line in log.splitlines():
        whip.feed(line)
    assert not whip.connected
    assert whip.failure() == error


def test_ffmpeg_is_the_dtls_client_unless_told_otherwise() -> None:
    options = ffmpeg_whip.WhipOptions()
    argv = ffmpeg_whip.whip_argv("ffmpeg", "http://x/v1/calls", "voice.wav", options)
    assert argv[-3:] == ["-whip_flags", "dtls_active", "http://x/v1/calls"]
    passive = ffmpeg_whip.WhipOptions(dtls_active=False)
    assert "dtls_active" not in ffmpeg_whip.whip_argv("ffmpeg", "u", "v", passive)


def test_a_session_the_server_closed_on_its_own_is_a_lost_call() -> None:
    # FFmpeg keeps publishing after aiortc's consent freshness gave up on it.
    whip = ffmpeg_whip.WhipLog()
    for line in PUBLISH_LOG:
        whip.feed(line)
    session = {"state": "closed", "close_reason": "peer_closed", "uplink": {}, "turns": []}
    lost = ffmpeg_whip.Publish(whip, 1795499123.0, talk_s=45.0, session=session)
    result = ffmpeg_whip.whip_result(lost)
    assert not result["ok"]
    assert result["error"].startswith("connection_lost: the media server closed the session")
    hung_up = ffmpeg_whip.Publish(
        whip, 1795499123.0, talk_s=5.0, session=session | {"close_reason": "deleted"}
    )
    ok = ffmpeg_whip.whip_result(hung_up)
    assert ok["ok"], ok["error"]
    assert ok["started"] == pytest.approx(1795499123.0 + 0.00477)
    assert ok["uplink"]["packets_sent"] == 276
    assert ok["downlink"]["packets_received"] is None  # send-only: nothing to measure
