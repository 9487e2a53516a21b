"""Agent events as JSON, the same on every transport.

WebRTC carries them on the ``oai-events`` data channel; other transports in
their own control messages.  Names follow the OpenAI Realtime API (``session.created``,
``input_audio_buffer.speech_started`` ... ``response.done``) so tools written
for it read these too.  Every event has ``type``, ``event_id`` and ``ts``: the
server's wall-clock time (epoch seconds) of the moment the event describes,
which may be a little before it was sent (speech is known to have stopped only
when the VAD's hangover runs out).  Millisecond fields count from the moment
the session's offer arrived.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.turns import (
    AgentEvent,
    ResponseAudioDone,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    Turn,
)


def turn_timings(turn: Turn, ms: Callable[[float | None], float | None]) -> dict[str, Any]:
    """A turn in ms since session start, plus the two derived costs."""
    return {
        "response_id": f"resp_{turn.response_id}",
        "speech_started_ms": ms(turn.speech_started_s),
        "speech_stopped_ms": ms(turn.speech_stopped_s),
        "vad_decided_ms": ms(turn.vad_decided_s),
        "response_created_ms": ms(turn.response_created_s),
        "generation_finished_ms": ms(turn.generation_finished_s),
        "first_frame_sent_ms": ms(turn.first_frame_sent_s),
        "last_frame_sent_ms": ms(turn.last_frame_sent_s),
        "audio_ms": turn.audio_ms,
        "response_latency_ms": round(turn.response_latency_s * 1000, 1),
        "pacing_wait_ms": round(turn.pacing_wait_s * 1000, 1),
    }


@dataclass
class EventWriter:
    """Numbers events and stamps them; one per session."""

    session_id: str
    started_s: float  # the session's start on the agent's clock
    epoch_offset_s: float  # wall clock minus agent clock
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def ms(self, at_s: float | None) -> float | None:
        return None if at_s is None else round((at_s - self.started_s) * 1000, 1)

    def _event(self, kind: str, at_s: float, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "event_id": f"event_{self.session_id}_{next(self._ids)}",
            "ts": round(at_s + self.epoch_offset_s, 6),
            **fields,
        }

    def session_created(self, at_s: float, details: dict[str, Any]) -> dict[str, Any]:
        return self._event("session.created", at_s, session={"id": self.session_id, **details})

    def from_agent(self, event: AgentEvent) -> dict[str, Any]:
        match event:
            case SpeechStarted(at_s=at):
                return self._event(
                    "input_audio_buffer.speech_started", at, audio_start_ms=self.ms(at)
                )
            case SpeechStopped(at_s=at, decided_s=decided):
                return self._event(
                    "input_audio_buffer.speech_stopped",
                    at,
                    audio_end_ms=self.ms(at),
                    vad_decided_ms=self.ms(decided),
                )
            case ResponseCreated(response_id=rid, at_s=at):
                return self._event(
                    "response.created", at, response={"id": f"resp_{rid}", "status": "in_progress"}
                )
            case ResponseAudioDone(response_id=rid, at_s=at):
                return self._event("response.audio.done", at, response_id=f"resp_{rid}")
            case ResponseDone(turn=turn, at_s=at):
                return self._event(
                    "response.done",
                    at,
                    response={
                        "id": f"resp_{turn.response_id}",
                        "status": "completed",
                        "timings": turn_timings(turn, self.ms),
                    },
                )
        raise AssertionError(f"unknown agent event {event!r}")
