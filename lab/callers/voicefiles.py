"""The lab caller's voice rendered to files, for clients that cannot take our frames.

FFmpeg reads a WAV; libwebrtc (Node wrtc) takes raw PCM and encodes it; werift
and libdatachannel send Opus RTP as given, so they get Ogg Opus in 20 ms
packets.  Each is rendered once per :class:`SpeakingPlan` and cached, so every
client speaks exactly what the aiortc caller speaks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import wave
from pathlib import Path

import av
import numpy as np

from lab.callers.conversation import Speaker, SpeakingPlan
from wire.speech import FRAME_SAMPLES, SAMPLE_RATE, Samples


def voice_loop(plan: SpeakingPlan) -> Samples:
    """One loop of the caller's voice: the lead-in, one utterance and its pause."""
    speaker = Speaker(plan)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    frames = (speaker.next_frame(0.0) for _ in range(plan.lead_in_frames + plan.cycle_frames))
    return np.concatenate([silence if frame is None else frame for frame in frames])


def write_pcm(path: Path, samples: Samples) -> None:
    path.write_bytes(samples.astype("<i2").tobytes())


def write_ogg_opus(path: Path, samples: Samples) -> None:
    """Encode to Ogg Opus in 20 ms packets (the scripts send one packet per RTP packet)."""
    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = 32_000  # a voice call's rate, as browsers send it
        stream.codec_context.options = {"frame_duration": "20", "application": "voip"}
        for start in range(0, len(samples) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            frame = av.AudioFrame.from_ndarray(
                samples[start : start + FRAME_SAMPLES].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav(path: Path, samples: Samples) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(samples.astype("<i2").tobytes())


VOICE_WRITERS = {
    "pcm": (".s16le", write_pcm),
    "wav": (".wav", write_wav),
    "opus": (".ogg", write_ogg_opus),
}


def voice_cache_dir() -> Path:
    """Rendered voices, shared by every call of this user (they are cheap to redo)."""
    return Path(tempfile.gettempdir()) / f"rtclab-voice-{os.getuid()}"


def voice_file(kind: str, plan: SpeakingPlan, cache_dir: Path) -> Path:
    """The voice as ``kind`` (pcm, wav, opus), rendered once per plan into ``cache_dir``."""
    suffix, write = VOICE_WRITERS[kind]
    key = hashlib.sha256(repr(plan).encode()).hexdigest()[:12]
    path = cache_dir / f"voice-{key}{suffix}"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        write(partial, voice_loop(plan))
        partial.replace(path)  # atomic: a concurrent call never reads half a file
    return path
