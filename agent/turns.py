"""The synthetic voice agent as a pure state machine over frames and a clock.

It hears the caller (one frame level at a time), decides the turn is over when
the VAD's hangover runs out, "thinks" for a model delay, then produces a
response that becomes available at ``generation_speed`` times real time, the
way TTS does.  How fast frames then leave is the transport's business: a
WebRTC sender pulls one 20 ms frame at a time in real time (audio plays on
arrival), so however fast the response was generated, its last frame leaves
``response_seconds`` after the first; a buffered transport may take frames as
soon as they exist.  The agent records when generation finished and when each
response's first and last frames were taken, so the cost of pacing is measured.

One turn at a time: an utterance that ends while a response is still playing
waits (the latest one only) and is answered right after.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from wire.speech import FRAME_MS, Samples, Vad, VadEvent, frames_of, synth_utterance


@dataclass(frozen=True, slots=True)
class AgentConfig:
    # A fast hosted model's time to first audio once the turn is over.
    model_delay_ms: float = 300.0
    # A short spoken answer; it fits in the lab caller's default 2.5 s pause.
    response_seconds: float = 2.0
    # TTS runs faster than real time; 4x means 8 s of audio is ready in 2 s.
    generation_speed: float = 4.0
    # Not the caller's 140 Hz, so a recording tells the two voices apart.
    response_pitch_hz: float = 220.0
    # Same loudness as the lab caller: well above any VAD threshold.
    response_level_dbfs: float = -16.0
    # Between decoded Opus silence (<-90 dBFS) and quiet speech (-30 dBFS).
    vad_threshold_dbfs: float = -45.0
    # Three frames: one loud click does not start a turn.
    vad_onset_ms: float = 60.0
    # Longer than the dips between syllables; also the floor of turn latency.
    vad_hangover_ms: float = 400.0

    def __post_init__(self) -> None:
        if self.generation_speed <= 0:
            raise ValueError("generation_speed must be > 0")
        if self.response_seconds <= 0:
            raise ValueError("response_seconds must be > 0")
        if self.model_delay_ms < 0:
            raise ValueError("model_delay_ms must be >= 0")


# --- what the agent reports ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """One answered utterance; every time is on the agent's clock (seconds)."""

    response_id: int
    speech_started_s: float | None
    speech_stopped_s: float  # when speech ended (the first quiet frame)
    vad_decided_s: float  # when the hangover ran out and the turn was declared over
    response_created_s: float  # vad_decided_s + model delay (later if a turn was playing)
    generation_finished_s: float  # when the whole response was available
    first_frame_sent_s: float
    last_frame_sent_s: float
    audio_frames: int

    @property
    def audio_ms(self) -> float:
        return self.audio_frames * FRAME_MS

    @property
    def response_latency_s(self) -> float:
        """End of the caller's speech to the first answer frame leaving the server."""
        return self.first_frame_sent_s - self.speech_stopped_s

    @property
    def pacing_wait_s(self) -> float:
        """How long the response was complete but still being paced out."""
        return max(0.0, self.last_frame_sent_s - self.generation_finished_s)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_s: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    at_s: float  # when speech ended
    decided_s: float  # when the VAD decided so


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: int
    at_s: float


@dataclass(frozen=True, slots=True)
class ResponseAudioDone:
    response_id: int
    at_s: float


@dataclass(frozen=True, slots=True)
class ResponseDone:
    turn: Turn
    at_s: float


AgentEvent = SpeechStarted | SpeechStopped | ResponseCreated | ResponseAudioDone | ResponseDone

Synthesiser = Callable[[AgentConfig, int], list[Samples]]


def synthesise(config: AgentConfig, response_id: int) -> list[Samples]:
    """The response audio, in 20 ms frames (deterministic per response)."""
    return list(
        _frames(
            config.response_seconds,
            10_000 + response_id,
            config.response_pitch_hz,
            config.response_level_dbfs,
        )
    )


@functools.lru_cache(maxsize=32)
def _frames(seconds: float, seed: int, pitch_hz: float, level_dbfs: float) -> tuple[Samples, ...]:
    # Synthesis takes ~15 ms per 2 s on the event loop; every session's response n
    # sounds the same, so a small memo makes it once per process.  Read-only frames.
    audio = synth_utterance(seconds, seed=seed, pitch_hz=pitch_hz, level_dbfs=level_dbfs)
    audio.flags.writeable = False
    return tuple(frames_of(audio))


# --- the state machine -----------------------------------------------------------


class TurnPhase(enum.Enum):
    IDLE = "idle"  # listening, nothing to say
    THINKING = "thinking"  # turn over; waiting out the model delay
    SPEAKING = "speaking"  # a response is being generated and paced out


@dataclass(frozen=True, slots=True)
class _EndOfTurn:
    speech_started_s: float | None
    speech_stopped_s: float
    decided_s: float


@dataclass
class _Response:
    response_id: int
    cause: _EndOfTurn
    created_s: float
    frames: list[Samples]
    speed: float
    sent: int = 0
    first_sent_s: float | None = None

    def available(self, now_s: float) -> int:
        """Frames generated by ``now_s``, at ``speed`` times real time."""
        elapsed_ms = max(0.0, now_s - self.created_s) * 1000
        return min(len(self.frames), math.floor(elapsed_ms * self.speed / FRAME_MS + 1e-9))

    @property
    def generation_finished_s(self) -> float:
        return self.created_s + len(self.frames) * FRAME_MS / 1000 / self.speed


@dataclass
class Agent:
    """Feed it received frame levels and pull frames to send; drain its events."""

    config: AgentConfig = field(default_factory=AgentConfig)
    synthesiser: Synthesiser = synthesise
    turns: list[Turn] = field(default_factory=list)
    superseded: int = 0  # utterance ends replaced by a later one while a turn played
    _vad: Vad = field(init=False)
    _speech_started_s: float | None = field(init=False, default=None)
    _waiting: _EndOfTurn | None = field(init=False, default=None)
    _response: _Response | None = field(init=False, default=None)
    _free_since_s: float = field(init=False, default=-math.inf)
    _next_id: int = field(init=False, default=1)
    _events: list[AgentEvent] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._vad = Vad(
            threshold_dbfs=self.config.vad_threshold_dbfs,
            onset_ms=self.config.vad_onset_ms,
            hangover_ms=self.config.vad_hangover_ms,
        )

    @property
    def phase(self) -> TurnPhase:
        if self._response is not None:
            return TurnPhase.SPEAKING
        return TurnPhase.THINKING if self._waiting is not None else TurnPhase.IDLE

    @property
    def caller_speaking(self) -> bool:
        return self._vad.speaking

    def on_frame_received(self, level_dbfs: float, now_s: float) -> None:
        """One received frame's level, at its arrival time."""
        change = self._vad.feed(level_dbfs, now_s)
        if change is not None:
            kind, when = change
            if kind is VadEvent.SPEECH_STARTED:
                self._speech_started_s = when
                self._events.append(SpeechStarted(at_s=when))
            else:
                self._events.append(SpeechStopped(at_s=when, decided_s=now_s))
                if self._waiting is not None:
                    self.superseded += 1
                self._waiting = _EndOfTurn(self._speech_started_s, when, now_s)
                self._speech_started_s = None
        self._advance(now_s)

    def next_frame(self, now_s: float) -> Samples | None:
        """The response frame to send now, or None for silence."""
        self._advance(now_s)
        response = self._response
        if response is None or response.sent >= response.available(now_s):
            return None
        frame = response.frames[response.sent]
        response.sent += 1
        if response.first_sent_s is None:
            response.first_sent_s = now_s
        if response.sent == len(response.frames):
            self._finish(response, now_s)
            self._advance(now_s)
        return frame

    def poll(self, now_s: float) -> None:
        """Let time pass (a model delay may run out between frames)."""
        self._advance(now_s)

    def next_deadline(self) -> float | None:
        """When a waiting turn's model delay runs out, if one is waiting."""
        if self._waiting is None or self._response is not None:
            return None
        return self._due(self._waiting)

    def take_events(self) -> list[AgentEvent]:
        events, self._events = self._events, []
        return events

    # --- internals -------------------------------------------------------------

    def _due(self, cause: _EndOfTurn) -> float:
        return max(cause.decided_s + self.config.model_delay_ms / 1000, self._free_since_s)

    def _advance(self, now_s: float) -> None:
        if self._response is not None or self._waiting is None:
            return
        due = self._due(self._waiting)
        if now_s < due:
            return
        response_id = self._next_id
        self._next_id += 1
        self._response = _Response(
            response_id=response_id,
            cause=self._waiting,
            created_s=due,
            frames=self.synthesiser(self.config, response_id),
            speed=self.config.generation_speed,
        )
        self._waiting = None
        self._events.append(ResponseCreated(response_id=response_id, at_s=due))

    def _finish(self, response: _Response, now_s: float) -> None:
        assert response.first_sent_s is not None
        turn = Turn(
            response_id=response.response_id,
            speech_started_s=response.cause.speech_started_s,
            speech_stopped_s=response.cause.speech_stopped_s,
            vad_decided_s=response.cause.decided_s,
            response_created_s=response.created_s,
            generation_finished_s=response.generation_finished_s,
            first_frame_sent_s=response.first_sent_s,
            last_frame_sent_s=now_s,
            audio_frames=len(response.frames),
        )
        self.turns.append(turn)
        self._response = None
        self._free_since_s = now_s
        self._events.append(ResponseAudioDone(response_id=response.response_id, at_s=now_s))
        self._events.append(ResponseDone(turn=turn, at_s=now_s))
