"""The audio edges of a session: the paced outgoing track and the remote-track reader."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from wire.speech import FRAME_SAMPLES, SAMPLE_RATE, Samples

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
SILENCE: Samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)

FrameSource = Callable[[float], Samples | None]


def audio_frame(samples: Samples, pts: int) -> AudioFrame:
    """A 48 kHz mono s16 frame aiortc's Opus encoder takes as is."""
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class PacedAudioTrack(MediaStreamTrack):
    """20 ms frames in real time from ``source(now)``; silence when it has none.

    Never stops sending while live: a continuous stream is what lets the
    receiver measure loss and gaps at any moment, not only during speech.
    Timestamps advance 960 ticks per frame, so a missing frame shows as a jump.
    """

    kind = "audio"

    def __init__(self, source: FrameSource, clock: Callable[[], float]) -> None:
        super().__init__()
        self._source = source
        self._clock = clock
        self._start_s: float | None = None
        self._pts = 0
        self.frames_sent = 0

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
        samples = self._source(self._clock())
        self.frames_sent += 1
        return audio_frame(SILENCE if samples is None else samples, self._pts)


def frame_samples(frame: AudioFrame) -> Samples:
    """The frame's samples as int16 (interleaved channels are fine for a level)."""
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


async def read_track(track: MediaStreamTrack, on_frame: Callable[[AudioFrame], None]) -> None:
    """Consume ``track`` until it ends.

    Every remote track must be read: aiortc queues decoded frames without bound
    for a track nobody reads.
    """
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if isinstance(frame, AudioFrame):
            on_frame(frame)
