"""The Chromium driver's pure parts: the call result from a page snapshot, and where it goes.

The snapshot here has the shape ``window.rtclab.snapshot()`` returns (the
end-to-end tests in test_chromium.py produce real ones); the result must be
the call result of DESIGN.md and must feed the scenario machinery unchanged.
"""

from __future__ import annotations

from typing import Any

from lab.callers.chromium import page_url
from lab.callers.page.result import call_result, failed_result, frames_missing, max_gap_ms
from lab.callers.record import SERVER_VIEW_KEYS, SETUP_PHASES, STATS_KEYS
from lab.scenarios.observe import RunClock
from lab.scenarios.runner import place_call_on_clock

STARTED = 1_800_000_000.0


def snapshot(**overrides: Any) -> dict[str, Any]:
    page: dict[str, Any] = {
        "started": STARTED,
        "call_id": "call_abc",
        "location": "http://127.0.0.1:8080/v1/calls/call_abc",
        "backend": "2",
        "error": None,
        "ended": True,
        "now_ms": 5200.0,
        "phases": {
            "answer": 20.0,
            "ice_connected": 30.0,
            "dtls_connected": 50.0,
            "datachannel_open": 55.0,
            "first_audio_in": 60.0,
        },
        "states": [[22.0, "ice", "checking"], [50.0, "connection", "connected"]],
        "events": [["session.created", STARTED + 0.05, 61.0]],
        "arrivals": [[60.0, 1], [80.0, 2], [100.0, 3], [900.0, 40], [920.0, 41]],
        "utterance_ends": [1500.0, 5500.0],  # the second one after talking stopped
        "agent_onsets": [2400.0],
        "stats": {
            "inbound": {"packetsReceived": 41, "packetsLost": 9},
            "outbound": {"packetsSent": 250},
            "rttMs": 1.0,
            "local": "127.0.0.1:40000",
            "mapped": "127.0.0.1:50000",
            "remote": "127.0.0.1:3478",
            "checks": {"requestsSent": 4, "responsesReceived": 4},
        },
        "levels": {"inDbfs": -20.0, "outDbfs": -90.0, "outPeakDbfs": -22.5},
    }
    page.update(overrides)
    return page


SERVER = {
    "id": "s1",
    "remote": "127.0.0.1:50000",
    "uplink": {"packets_received": 245, "packets_lost": 0, "loss_ratio": 0.0, "extra": 1},
    "downlink_sent": 52,
    "uplink_timeline": {"first": STARTED + 0.06, "last": STARTED + 5.1, "gaps": []},
    "state": "connected",
    "closed": None,
}


def test_a_page_snapshot_becomes_the_call_result() -> None:
    result = call_result(snapshot(), SERVER, end_ms=5000.0, error=None)

    assert result["schema"] == 1 and result["ok"] and result["error"] is None
    assert (result["call_id"], result["backend"], result["started"]) == ("call_abc", 2, STARTED)
    assert list(result["setup_ms"]) == list(SETUP_PHASES)
    assert result["setup_ms"]["dtls_connected"] == 50.0
    assert set(result["downlink"]) == set(STATS_KEYS) == set(result["uplink"])
    assert result["downlink"]["packets_received"] == 41
    # 860 ms between the first and last arrival: 43 frames, 40 of them counted.
    assert result["downlink"]["packets_lost"] == 3
    assert result["downlink"]["loss_ratio"] == round(3 / 44, 6)
    # The browser's own (RTCP-paced) count is kept as the RTP-level view.
    assert result["downlink"]["rtp_packets_lost"] == 9
    assert result["downlink"]["packets_sent"] == 52  # as the server counted them
    assert result["downlink"]["max_gap_ms"] == 4080.0  # last arrival to the end of talk
    assert result["uplink"]["packets_received"] == 245 and "extra" not in result["uplink"]
    assert result["uplink"]["packets_sent"] == 250
    assert result["talk_ms"] == 4950.0
    # Only utterances that ended while talking count; the onset answers the first.
    assert result["utterances"] == 1
    assert result["turns"] == [
        {"speech_end_ms": 1500.0, "first_response_audio_ms": 2400.0, "latency_ms": 900.0}
    ]
    assert result["local_address"] == "127.0.0.1:40000"
    assert result["mapped_address"] == "127.0.0.1:50000"
    assert set(result["server_view"]) == set(SERVER_VIEW_KEYS)
    assert result["ice_checks"] == {"requests_sent": 4, "responses_received": 4}
    assert result["agent_level_peak_dbfs"] == -22.5
    assert result["arrivals_ms"][3] == [900.0, 40]


def test_an_error_from_the_page_or_the_driver_fails_the_call() -> None:
    from_page = call_result(
        snapshot(error="connection_failed: gone"), None, end_ms=None, error=None
    )
    assert not from_page["ok"] and from_page["error"] == "connection_failed: gone"
    assert from_page["server_view"] is None and from_page["talk_ms"] is None
    driver = call_result(snapshot(), SERVER, end_ms=1000.0, error="setup_timeout: slow")
    assert driver["error"] == "setup_timeout: slow"


def test_a_call_that_never_started_still_has_the_result_shape() -> None:
    result = failed_result("browser: crashed")
    assert result["schema"] == 1 and not result["ok"] and result["error"] == "browser: crashed"
    assert all(value is None for value in result["setup_ms"].values())
    assert result["arrivals_ms"] == [] and result["turns"] == []


def test_the_result_goes_onto_a_run_clock_like_any_caller() -> None:
    clock = RunClock()
    clock.origin = STARTED - 2.0  # the call started 2 s into the run
    placed = place_call_on_clock(
        call_result(snapshot(), SERVER, end_ms=5000.0, error=None), clock, "initial"
    )
    timeline = placed["timeline"]
    assert placed["start_s"] == 2.0
    assert timeline["downlink_ms"][:3] == [2060, 2080, 2100]
    assert timeline["states"][-1] == [2050, "connection", "connected"]
    assert timeline["uplink_segments_ms"] == [[2060, 7100]]
    assert timeline["end_ms"] == 2000 + 20 + 4950


def test_missing_frames_come_from_the_span_between_arrivals() -> None:
    assert frames_missing([]) is None and frames_missing([[0.0, 1]]) is None
    steady = [[20.0 * i, i + 1] for i in range(50)]
    assert frames_missing(steady) == 0
    # Sampled every ~40 ms, counts jumping by two: nothing missing either.
    assert frames_missing(steady[::2]) == 0
    # 1 s from the last frame to the next one: of the 50 frames sent, 49 never came.
    stalled = [*steady, [980.0 + 1000.0, 51]]
    assert frames_missing(stalled) == 49


def test_max_gap_counts_the_silence_after_the_last_arrival() -> None:
    assert max_gap_ms([], 100.0) is None
    assert max_gap_ms([0.0, 20.0, 40.0], None) == 20.0
    assert max_gap_ms([0.0, 20.0, 40.0], 540.0) == 500.0
    assert max_gap_ms([0.0, 300.0, 320.0], 330.0) == 300.0


def test_the_page_is_loaded_from_the_offer_urls_origin() -> None:
    assert page_url("http://127.0.0.1:8080/v1/calls") == "http://127.0.0.1:8080/"
    assert (
        page_url("http://127.0.0.1:9000/v1/realtime/calls")
        == "http://127.0.0.1:9000/?offer=/v1/realtime/calls"
    )
