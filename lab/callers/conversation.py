"""The caller's side of a conversation, pure: what to say when, and which answer was whose.

The caller speaks utterances with pauses (:class:`Speaker`), hears the agent,
and afterwards pairs each answer's onset with the utterance it answered
(:func:`pair_turns`).  Times are whatever clock the shell passes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from wire.speech import FRAME_MS, Samples, frames_of, synth_utterance


@dataclass(frozen=True, slots=True)
class SpeakingPlan:
    # Silence first, so the agent's VAD starts from quiet, as a person says hello.
    lead_in_s: float = 0.5
    # One short sentence.
    speech_s: float = 1.5
    # Room for the agent's default answer (0.4 s hangover + 0.3 s model + 2 s) before
    # the caller speaks again.
    pause_s: float = 2.5
    # A low voice; the agent answers at a higher pitch, so recordings tell them apart.
    pitch_hz: float = 140.0
    # A normal speaking level, far above any VAD threshold.
    level_dbfs: float = -16.0
    # Utterance k uses seed + k: the same call sounds the same every time.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.speech_s <= 0 or self.pause_s < 0 or self.lead_in_s < 0:
            raise ValueError("speech_s must be > 0; pause_s and lead_in_s >= 0")

    @property
    def lead_in_frames(self) -> int:
        return round(self.lead_in_s * 1000 / FRAME_MS)

    @property
    def speech_frames(self) -> int:
        return math.ceil(self.speech_s * 1000 / FRAME_MS)  # as synth_utterance rounds

    @property
    def cycle_frames(self) -> int:
        return self.speech_frames + max(1, round(self.pause_s * 1000 / FRAME_MS))


@dataclass
class Speaker:
    """The caller's voice, one 20 ms frame per call, with when each utterance ended."""

    plan: SpeakingPlan = field(default_factory=SpeakingPlan)
    utterance_starts: list[float] = field(default_factory=list)
    # When the first quiet frame after each utterance was handed to the sender: the
    # same instant a VAD calls "speech stopped".
    utterance_ends: list[float] = field(default_factory=list)
    frames: int = 0
    _utterance: tuple[Samples, ...] = ()

    def next_frame(self, now_s: float) -> Samples | None:
        """The frame to send at ``now_s``; None is silence."""
        index = self.frames
        self.frames += 1
        plan = self.plan
        if index < plan.lead_in_frames:
            return None
        number, position = divmod(index - plan.lead_in_frames, plan.cycle_frames)
        if position == 0:
            self._utterance = _utterance(
                plan.speech_s, plan.seed + number, plan.pitch_hz, plan.level_dbfs
            )
            self.utterance_starts.append(now_s)
        if position < plan.speech_frames:
            return self._utterance[position]
        if position == plan.speech_frames:
            self.utterance_ends.append(now_s)
        return None


@functools.lru_cache(maxsize=64)
def _utterance(
    seconds: float, seed: int, pitch_hz: float, level_dbfs: float
) -> tuple[Samples, ...]:
    # Synthesis takes ~10 ms per utterance inside the sender's frame callback; many
    # calls in one process say the same utterances, so a small memo makes each once.
    audio = synth_utterance(seconds, seed=seed, pitch_hz=pitch_hz, level_dbfs=level_dbfs)
    audio.flags.writeable = False
    return tuple(frames_of(audio))


@dataclass(frozen=True, slots=True)
class CallerTurn:
    speech_end_s: float
    response_onset_s: float

    @property
    def latency_s(self) -> float:
        return self.response_onset_s - self.speech_end_s


def pair_turns(speech_ends: list[float], response_onsets: list[float]) -> list[CallerTurn]:
    """Pair each answer onset with the latest not yet answered utterance end before it.

    "Latest" rather than "earliest" because an utterance the agent did not hear
    (lost audio) gets no answer, and the next answer belongs to the next
    utterance.  An onset with no utterance before it (the agent speaking
    unprompted) pairs with nothing.
    """
    turns: list[CallerTurn] = []
    next_free = 0
    for onset in sorted(response_onsets):
        candidates = [i for i in range(next_free, len(speech_ends)) if speech_ends[i] <= onset]
        if not candidates:
            continue
        chosen = candidates[-1]
        turns.append(CallerTurn(speech_ends[chosen], onset))
        next_free = chosen + 1
    return turns
