from __future__ import annotations

import numpy as np

from wire.speech import (
    FRAME_MS,
    FRAME_SAMPLES,
    Vad,
    VadEvent,
    frames_of,
    level_dbfs,
    synth_utterance,
)


def run_vad(samples: np.ndarray, vad: Vad) -> list[tuple[VadEvent, float]]:
    events = []
    for index, frame in enumerate(frames_of(samples)):
        event = vad.feed(level_dbfs(frame), index * FRAME_MS / 1000)
        if event:
            events.append(event)
    return events


def test_utterance_is_deterministic_frame_aligned_and_at_level() -> None:
    a = synth_utterance(1.01, seed=3)
    assert len(a) % FRAME_SAMPLES == 0 and len(a) == 51 * FRAME_SAMPLES
    assert np.array_equal(a, synth_utterance(1.01, seed=3))
    assert not np.array_equal(a, synth_utterance(1.01, seed=4))
    assert -30 < level_dbfs(a) < -14


def test_vad_sees_one_utterance_with_its_real_end_despite_syllable_dips() -> None:
    silence = np.zeros(FRAME_SAMPLES * 50, dtype=np.int16)  # 1 s
    speech = synth_utterance(2.0, seed=1)
    audio = np.concatenate([silence, speech, silence])
    events = run_vad(audio, Vad())
    assert [event for event, _ in events] == [VadEvent.SPEECH_STARTED, VadEvent.SPEECH_STOPPED]
    assert abs(events[0][1] - 1.0) <= 0.02
    assert abs(events[1][1] - 3.0) <= 0.1


def test_vad_ignores_a_click_shorter_than_onset() -> None:
    click = np.concatenate(
        [np.full(FRAME_SAMPLES, 8000, dtype=np.int16), np.zeros(FRAME_SAMPLES * 40, np.int16)]
    )
    assert run_vad(click, Vad(onset_ms=60)) == []


def test_level_of_silence_and_full_scale() -> None:
    assert level_dbfs(np.zeros(960, dtype=np.int16)) == -120.0
    square = np.full(960, 32767, dtype=np.int16)
    assert abs(level_dbfs(square)) < 0.01
