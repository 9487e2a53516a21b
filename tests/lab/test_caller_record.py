"""The caller's pure bookkeeping: from observations to the call result."""

from __future__ import annotations

import json

from lab.callers.record import CallRecord, error_text, session_from_body

SESSION = {
    "id": "abc",
    "remote": "127.0.0.1:40000",
    "server_ufrag": "AQAB",
    "local_port": 50000,
    "downlink_sent": 260,
    "uplink": {
        "packets_sent": None,
        "packets_received": 248,
        "packets_lost": 2,
        "loss_ratio": 0.008,
        "max_gap_ms": 61.0,
    },
}


def test_the_session_json_is_found_directly_or_under_session() -> None:
    assert session_from_body(SESSION) is SESSION
    assert session_from_body({"id": "call1", "session": SESSION}) is SESSION
    assert session_from_body(["not", "an", "object"]) is None


def test_error_bodies_are_summarised() -> None:
    body = json.dumps({"error": {"code": "draining", "message": "try later"}})
    assert error_text(body) == "draining: try later"
    assert error_text("<html>bad gateway</html>") == "<html>bad gateway</html>"


def _record() -> CallRecord:
    record = CallRecord(keep_arrivals=True)
    record.mark("answer", 0.5)  # before the offer: not a phase of this call
    record.t0_s = 1.0
    record.mark("answer", 1.008)
    record.mark("answer", 1.5)  # only the first time counts
    record.talk_start_s = 1.05
    return record


def test_a_call_result_from_observations() -> None:
    record = _record()
    record.utterance_ends.append(3.0)
    for tick in range(200):  # 4 s of agent audio: quiet, then an answer at 3.9 s
        now = 1.1 + tick * 0.02
        record.on_downlink_frame(now, tick * 960, -20.0 if now >= 3.9 - 1e-9 else -90.0)
    record.on_event(json.dumps({"type": "session.created", "ts": 1.0}), 1.06)
    done = {"type": "response.done", "ts": 2.0, "response": {"timings": {"audio_ms": 2000}}}
    record.on_event(json.dumps(done), 5.0)
    record.on_event("not json", 5.0)
    record.on_event(b"\x00binary", 5.0)
    record.end_s = 5.1
    record.uplink_sent = 251
    record.server_session = SESSION

    result = record.result()
    assert result["setup_ms"]["answer"] == 8.0
    assert result["talk_ms"] == 4050.0
    assert result["turns"] == [
        {"speech_end_ms": 2000.0, "first_response_audio_ms": 2900.0, "latency_ms": 900.0}
    ]
    assert result["downlink"]["packets_received"] == 200
    assert result["downlink"]["packets_sent"] == 260  # the server's count
    assert result["uplink"] == {  # type: ignore[dict-item]
        **SESSION["uplink"],
        "packets_sent": 251,
        "rtp_packets_received": None,
        "rtp_packets_lost": None,
        "rtp_loss_ratio": None,
    }
    assert [event[0] for event in result["events"]] == ["session.created", "response.done"]
    assert result["agent_turns"] == [{"audio_ms": 2000}]
    assert result["server_view"] == {
        "id": "abc",
        "remote": "127.0.0.1:40000",
        "server_ufrag": "AQAB",
        "local_port": 50000,
        "state": None,
        "close_reason": None,
        "closed": None,
        "uplink_timeline": None,
        "media_socket": None,
        "forward": None,
        "remotes": None,
    }
    assert len(result["arrivals_ms"]) == 200
    json.dumps(result)


def test_without_the_server_view_uplink_counts_are_unknown() -> None:
    record = _record()
    record.uplink_sent = 10
    record.error = "setup_timeout: not connected"
    result = record.result()
    assert result["ok"] is False
    assert result["uplink"] == {
        "packets_sent": 10,
        "packets_received": None,
        "packets_lost": None,
        "loss_ratio": None,
        "max_gap_ms": None,
        "rtp_packets_received": None,
        "rtp_packets_lost": None,
        "rtp_loss_ratio": None,
    }
    assert result["server_view"] is None and result["turns"] == []
