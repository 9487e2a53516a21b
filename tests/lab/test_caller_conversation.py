"""The caller's pure conversation pieces: its speaking schedule and turn pairing."""

from __future__ import annotations

import pytest

from lab.callers.conversation import CallerTurn, Speaker, SpeakingPlan, pair_turns
from wire.speech import level_dbfs

TICK_S = 0.02


def test_speaker_follows_the_plan_and_records_utterance_ends() -> None:
    plan = SpeakingPlan(lead_in_s=0.5, speech_s=1.0, pause_s=1.0)
    speaker = Speaker(plan)
    voiced = []
    for tick in range(250):  # 5 s
        frame = speaker.next_frame(tick * TICK_S)
        voiced.append(frame is not None and level_dbfs(frame) > -45)
    # 0.5 s silence, then 1 s speech / 1 s pause, twice.
    assert voiced[:25] == [False] * 25
    assert all(voiced[25:75]) and not any(voiced[75:125])
    assert all(voiced[125:175]) and not any(voiced[175:225])
    assert all(voiced[225:250])
    assert speaker.utterance_starts == pytest.approx([0.5, 2.5, 4.5])
    # The end is the first quiet frame, as a VAD dates "speech stopped".
    assert speaker.utterance_ends == pytest.approx([1.5, 3.5])


def test_utterances_are_deterministic_per_seed() -> None:
    def first_voiced(seed: int) -> bytes:
        speaker = Speaker(SpeakingPlan(lead_in_s=0.0, seed=seed))
        frame = speaker.next_frame(0.0)
        assert frame is not None
        return frame.tobytes()

    assert first_voiced(1) == first_voiced(1)
    assert first_voiced(1) != first_voiced(2)


def test_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        SpeakingPlan(speech_s=0.0)


def test_each_answer_pairs_with_the_latest_unanswered_utterance_before_it() -> None:
    assert pair_turns([2.0, 6.0], [2.9, 6.8]) == [CallerTurn(2.0, 2.9), CallerTurn(6.0, 6.8)]
    # The agent missed the first utterance: its one answer belongs to the second.
    assert pair_turns([2.0, 6.0], [6.9]) == [CallerTurn(6.0, 6.9)]
    # Audio before anyone spoke, and a second onset within one answer, pair with nothing.
    assert pair_turns([2.0], [0.3, 2.9, 3.5]) == [CallerTurn(2.0, 2.9)]
    assert pair_turns([], [1.0]) == []
    assert CallerTurn(2.0, 2.9).latency_s == pytest.approx(0.9)
