"""GStreamer's webrtcbin (libnice) as a caller, through signaling and the one-port relay.

The call test runs the real ``gst/call.py`` under the system's Python and
GStreamer against a stack of real subprocesses; it skips with the reason when
GStreamer is not installed (and fails in CI, whose .ci/run installs it).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from lab.callers import gstreamer
from lab.callers.gstreamer import DRIVER, gstreamer_result
from lab.stack import Stack, StackConfig
from tests.interop.live import get, relay_view_while_live, skip_or_fail

CALL_SECONDS = 5.0
# A 5 s call carries ~250 Opus frames each way; allow for set-up and frames in flight.
MIN_PACKETS = 200


@pytest.fixture(scope="module")
def gstreamer_installed() -> None:
    problem = DRIVER.unavailable()
    if problem is not None:
        skip_or_fail(problem)


@pytest.mark.e2e
async def test_webrtcbin_talks_with_the_agent_through_the_relay(
    gstreamer_installed: None, tmp_path: Path
) -> None:
    async with Stack(StackConfig(media_servers=1, log_dir=tmp_path / "logs")) as stack:
        call = asyncio.create_task(
            DRIVER.call(f"{stack.signaling_url}/v1/calls", seconds=CALL_SECONDS)
        )
        flows, session = await relay_view_while_live(stack, call, both_ways=True)
        result = await call
        closed = await get(f"{stack.media_url(0)}/sessions?closed=1")

    assert result["ok"], result["error"]
    assert result["backend"] == 1 and result["call_id"], result
    for phase in ("answer", "ice_connected", "dtls_connected", "datachannel_open"):
        assert result["setup_ms"][phase] is not None, (phase, result["setup_ms"])
    assert result["setup_ms"]["answer"] < result["setup_ms"]["dtls_connected"]
    # Audio both ways: the server heard the caller, the caller's jitter buffer got the agent.
    assert result["uplink"]["packets_received"] > MIN_PACKETS, result["uplink"]
    assert result["downlink"]["packets_received"] > MIN_PACKETS, result["downlink"]
    assert result["downlink"]["packets_lost"] == 0, result["downlink"]
    assert result["downlink"]["rtp_packets_lost"] == 0, result["downlink"]
    # The arrival timeline is on the POST's clock, one entry per packet, 20 ms of audio apart.
    arrivals = result["arrivals_ms"]
    assert len(arrivals) == result["downlink"]["packets_received"]
    assert arrivals[1][1] - arrivals[0][1] == 960
    # The agent heard an utterance end and answered it, on the data channel.
    kinds = [event[0] for event in result["events"]]
    assert "session.created" in kinds and "input_audio_buffer.speech_stopped" in kinds, kinds
    assert "response.created" in kinds, kinds
    # The receive jitter buffer's own view, and libnice's keepalive settings.
    jitter = result["jitterbuffer"]
    assert jitter["num_pushed"] > MIN_PACKETS and jitter["num_lost"] == 0, jitter
    assert {"num_late", "drop_on_latency", "latency_ms"} <= set(jitter), jitter
    assert set(result["ice"]) >= {"keepalive-conncheck", "consent-freshness"}, result["ice"]

    # One flow, and the media server's peer is that flow's upstream socket: nothing
    # bypassed the relay; webrtcbin's remote candidate is the relay's public address.
    assert len(flows) == 1, flows
    assert session["remote"] == flows[0]["upstream"], (session, flows)
    assert result["remote_address"] == f"{stack.relay_address[0]}:{stack.relay_address[1]}"
    # The caller hung up by DELETE through signaling.
    assert [s["close_reason"] for s in closed] == ["deleted"], closed


def test_the_check_names_what_is_missing_under_a_python_without_gi() -> None:
    # The project's own interpreter has no GObject introspection: the check says so.
    gstreamer.gstreamer_problem.cache_clear()
    try:
        problem = gstreamer.gstreamer_problem(sys.executable)
    finally:
        gstreamer.gstreamer_problem.cache_clear()
    assert problem is not None and "python3-gi" in problem and "apt-get install" in problem


def test_the_result_reads_the_downlink_from_rtp_arrivals_and_keeps_the_jitter_buffer() -> None:
    # Packets of 20 ms (960 ticks); two missing after the 3rd; then silence to the end.
    timestamps = [0, 960, 1920, 4800, 5760]
    raw = {
        "ok": True,
        "error": None,
        "stack": "gstreamer",
        "stack_version": "GStreamer 1.22.0",
        "call_id": "call_1",
        "backend": 1,
        "location": "http://127.0.0.1:1/v1/calls/call_1",
        "started": 1795498383.902,
        "talk_ms": 1000.0,
        "end_ms": 1200.0,
        "setup_ms": {"answer": 30.0, "ice_connected": 90.0, "dtls_connected": 120.0},
        "uplink": {"packets_sent": 50},
        "arrivals_ms": [[200.0 + 20 * i, ts] for i, ts in enumerate(timestamps)],
        "selected_pair": {"local": "127.0.0.1:5", "local_type": "prflx", "remote": "127.0.0.1:3"},
        "jitterbuffer": {"num_pushed": 5, "num_lost": 2, "num_late": 0, "drop_on_latency": False},
        "ice": {"keepalive-conncheck": False, "consent-freshness": False},
        "server": {"session": {"uplink": {"packets_received": 48}, "downlink_sent": 7}},
    }
    result = gstreamer_result(raw)
    down = result["downlink"]
    assert down["packets_received"] == 5 and down["packets_lost"] == 2
    assert down["packets_sent"] == 7  # what the server sent
    assert down["max_gap_ms"] == 1200.0 - 280.0  # the trailing silence to the end of the call
    assert (down["rtp_packets_received"], down["rtp_packets_lost"]) == (5, 2)
    assert result["uplink"]["packets_received"] == 48
    assert result["jitterbuffer"]["num_lost"] == 2 and result["ice"]["consent-freshness"] is False
    assert result["local_address"] is None  # peer-reflexive: the relay's upstream, not ours
    assert result["remote_address"] == "127.0.0.1:3"
