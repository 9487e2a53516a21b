"""Agent events as oai-events JSON."""

from __future__ import annotations

import json

import pytest

from agent.events import EventWriter
from agent.turns import (
    ResponseAudioDone,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    Turn,
)

EPOCH_OFFSET = 1_700_000_000.0


def _turn() -> Turn:
    return Turn(
        response_id=1,
        speech_started_s=100.5,
        speech_stopped_s=102.0,
        vad_decided_s=102.4,
        response_created_s=102.7,
        generation_finished_s=103.2,
        first_frame_sent_s=102.72,
        last_frame_sent_s=104.7,
        audio_frames=100,
    )


def test_events_are_named_like_the_realtime_api_and_stamped() -> None:
    writer = EventWriter("s1", started_s=100.0, epoch_offset_s=EPOCH_OFFSET)
    turn = _turn()
    events = [
        writer.session_created(100.05, {"backend_id": 3}),
        writer.from_agent(SpeechStarted(at_s=100.5)),
        writer.from_agent(SpeechStopped(at_s=102.0, decided_s=102.4)),
        writer.from_agent(ResponseCreated(response_id=1, at_s=102.7)),
        writer.from_agent(ResponseAudioDone(response_id=1, at_s=104.7)),
        writer.from_agent(ResponseDone(turn=turn, at_s=104.7)),
    ]
    assert [event["type"] for event in events] == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.created",
        "response.audio.done",
        "response.done",
    ]
    ids = [event["event_id"] for event in events]
    assert len(set(ids)) == len(ids)
    assert events[0]["session"] == {"id": "s1", "backend_id": 3}
    assert events[1]["ts"] == pytest.approx(EPOCH_OFFSET + 100.5)
    assert events[1]["audio_start_ms"] == 500.0
    assert events[2]["audio_end_ms"] == 2000.0 and events[2]["vad_decided_ms"] == 2400.0
    assert events[3]["response"] == {"id": "resp_1", "status": "in_progress"}
    timings = events[5]["response"]["timings"]
    assert timings["speech_stopped_ms"] == 2000.0
    assert timings["generation_finished_ms"] == 3200.0
    assert timings["last_frame_sent_ms"] == 4700.0
    assert timings["audio_ms"] == 2000
    assert timings["response_latency_ms"] == pytest.approx(720.0)
    assert timings["pacing_wait_ms"] == pytest.approx(1500.0)
    for event in events:
        json.dumps(event)  # every event is plain JSON
