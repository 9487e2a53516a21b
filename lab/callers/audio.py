"""The caller's outgoing audio track: paced 20 ms frames of its :class:`Speaker`."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from lab.callers.conversation import Speaker
from wire.speech import FRAME_SAMPLES, SAMPLE_RATE, Samples

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
SILENCE: Samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def frame_samples(frame: AudioFrame) -> Samples:
    """A received frame's samples as int16 (interleaved stereo is fine for a level)."""
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


class VoiceTrack(MediaStreamTrack):
    """The speaker's frames in real time, silence between utterances, never a gap.

    Timestamps advance 960 ticks per frame, so the receiver sees loss as jumps.
    """

    kind = "audio"

    def __init__(self, speaker: Speaker, clock: Callable[[], float]) -> None:
        super().__init__()
        self.speaker = speaker
        self._clock = clock
        self._start_s: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_s is None:
            self._start_s = self._clock()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start_s + self._pts / SAMPLE_RATE - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self.speaker.next_frame(self._clock())
        frame = AudioFrame.from_ndarray(
            (SILENCE if samples is None else samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame
