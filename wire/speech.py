"""Synthetic speech and voice activity, shared by the caller and the agent.

Both ends of a lab call need the same idea of "someone is talking": the caller
speaks utterances and listens for the agent's answer; the agent listens for
the end of the caller's utterance and answers.  Real speech is not needed to
measure a transport, but it must look like speech to a VAD: voiced syllables
(a harmonic buzz under a ~4 Hz envelope) separated by short dips, then real
pauses.  Everything is 48 kHz mono int16 in 20 ms frames, as Opus carries it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

Samples = npt.NDArray[np.int16]


def synth_utterance(
    seconds: float, *, seed: int, pitch_hz: float = 140.0, level_dbfs: float = -16.0
) -> Samples:
    """``seconds`` of speech-like audio: voiced syllables at ~4 per second.

    Deterministic for a given ``seed``; the length is rounded up to whole frames.
    """
    frames = max(1, math.ceil(seconds * 1000 / FRAME_MS))
    n = frames * FRAME_SAMPLES
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    # Pitch wanders a little, as intonation does.
    vibrato = 1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(pitch_hz * vibrato) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    # Syllables: a raised-cosine envelope per syllable, each 150-300 ms.
    envelope = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.15, 0.30) * SAMPLE_RATE)
        end = min(n, pos + length)
        window = np.hanning(length)[: end - pos]
        envelope[pos:end] = 0.35 + 0.65 * window
        pos = end
    signal = voiced * envelope
    signal /= np.max(np.abs(signal)) or 1.0
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    return np.asarray(np.clip(signal * amplitude, -32768, 32767), dtype=np.int16)


def frames_of(samples: Samples) -> list[Samples]:
    """Split into 20 ms frames, zero-padding the last."""
    pad = -len(samples) % FRAME_SAMPLES
    if pad:
        samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
    return list(samples.reshape(-1, FRAME_SAMPLES))


def level_dbfs(samples: npt.NDArray[np.int16]) -> float:
    """RMS level in dBFS (-120 for digital silence)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


class VadEvent(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"


@dataclass
class Vad:
    """Energy VAD with onset and hangover, fed one frame level at a time.

    Speech starts after ``onset_ms`` of frames above ``threshold_dbfs`` and
    stops after ``hangover_ms`` below it: the hangover is what keeps the dips
    between syllables from ending an utterance, and it is also the floor of any
    voice agent's turn latency.  ``speech_stopped`` reports when the speech
    really ended (the first quiet frame), not when the hangover ran out.
    """

    threshold_dbfs: float = -45.0
    onset_ms: float = 60.0
    hangover_ms: float = 400.0
    speaking: bool = False
    _loud_since: float | None = None
    _quiet_since: float | None = None

    def feed(self, level: float, now_s: float) -> tuple[VadEvent, float] | None:
        """Feed one frame's level at ``now_s``; return (event, when) on a change."""
        loud = level >= self.threshold_dbfs
        if not self.speaking:
            if not loud:
                self._loud_since = None
                return None
            if self._loud_since is None:
                self._loud_since = now_s
            if (now_s - self._loud_since) * 1000 + FRAME_MS >= self.onset_ms:
                self.speaking = True
                self._quiet_since = None
                return VadEvent.SPEECH_STARTED, self._loud_since
            return None
        if loud:
            self._quiet_since = None
            return None
        if self._quiet_since is None:
            self._quiet_since = now_s
        if (now_s - self._quiet_since) * 1000 >= self.hangover_ms:
            self.speaking = False
            self._loud_since = None
            return VadEvent.SPEECH_STOPPED, self._quiet_since
        return None
