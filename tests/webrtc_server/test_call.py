"""A real call in direct topology: the lab caller against a real media server."""

from __future__ import annotations

from typing import Any

from agent.turns import AgentConfig
from lab.callers.aiortc_caller import run_call
from tests.webrtc_server.conftest import StartMedia

TURN_EVENTS = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "response.created",
    "response.audio.done",
    "response.done",
]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


async def test_call_audio_both_ways_events_and_a_measured_turn(
    media: StartMedia, direct: dict[str, Any]
) -> None:
    agent = AgentConfig()
    client = await media(**direct, backend_id=3, agent=agent)
    result = await run_call(str(client.make_url("/sessions")), seconds=5.5)
    assert result["ok"], result["error"]
    assert result["backend"] == 3
    assert result["location"].endswith(f"/sessions/{result['call_id']}")

    # Audio both ways, 20 ms frames for most of 5.5 s, none lost on loopback.
    up, down = result["uplink"], result["downlink"]
    assert up["packets_received"] > 200 and down["packets_received"] > 200, result
    assert up["packets_lost"] == 0 and down["packets_lost"] == 0, result
    assert up["packets_sent"] >= up["packets_received"]

    # oai-events: the session first, then a whole turn in order (the caller's next
    # utterance may start while the answer still plays, so look at first occurrences).
    events = result["events"]
    types = [event[0] for event in events]
    assert types[0] == "session.created"
    first = [types.index(kind) for kind in TURN_EVENTS]
    assert first == sorted(first), types
    stamps = [events[index][1] for index in first]
    assert stamps == sorted(stamps) and all(isinstance(ts, float) for ts in stamps)

    # The caller measured the turn: its speech ended, then the answer came; no answer
    # can come before the agent's hangover and model delay have passed.
    assert result["turns"], result
    floor_ms = agent.vad_hangover_ms + agent.model_delay_ms
    for turn in result["turns"]:
        assert turn["latency_ms"] >= floor_ms
        assert turn["first_response_audio_ms"] > turn["speech_end_ms"]

    # The agent's own timings: generated 4x faster than it could be sent.
    (timings,) = result["agent_turns"][:1]
    assert timings["audio_ms"] == agent.response_seconds * 1000
    assert timings["generation_finished_ms"] < timings["last_frame_sent_ms"]
    assert timings["pacing_wait_ms"] > 0

    # The server saw the caller's own socket (no relay in direct topology).
    assert result["server_view"]["remote"] == result["local_address"]
    # Its uplink timeline is in Unix time, so a lab can line it up with the caller's.
    timeline = result["server_view"]["uplink_timeline"]
    assert result["started"] < timeline["first"] < timeline["last"]
    assert timeline["last"] - timeline["first"] > 4.0

    # Hung up: nothing left, and the metrics saw the turn.
    assert await (await client.get("/sessions")).json() == []
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "rtclab_media_turns_total") >= 1
    assert _metric(metrics, 'rtclab_media_sessions_closed_total{reason="deleted"}') == 1
    assert _metric(metrics, "rtclab_media_uplink_frames_received_total") >= up["packets_received"]
    assert _metric(metrics, "rtclab_media_uplink_frames_lost_total") == 0
