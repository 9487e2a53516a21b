"""The synthetic agent in virtual time: 20 ms ticks, a caller script, no sockets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agent.turns import (
    Agent,
    AgentConfig,
    AgentEvent,
    ResponseAudioDone,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    TurnPhase,
)
from wire.speech import FRAME_MS, level_dbfs

TICK_S = FRAME_MS / 1000
LOUD, QUIET = -20.0, -90.0


@dataclass
class Run:
    events: list[tuple[float, AgentEvent]] = field(default_factory=list)
    sent: list[tuple[float, bool]] = field(default_factory=list)  # (time, speech?)

    def of(self, kind: type) -> list[AgentEvent]:
        return [event for _, event in self.events if isinstance(event, kind)]


def converse(agent: Agent, caller_loud: Callable[[float], bool], seconds: float) -> Run:
    """Each tick: one caller frame arrives, then the sender pulls one agent frame."""
    run = Run()
    for tick in range(round(seconds / TICK_S)):
        now = tick * TICK_S
        agent.on_frame_received(LOUD if caller_loud(now) else QUIET, now)
        frame = agent.next_frame(now)
        run.sent.append((now, frame is not None))
        run.events += [(now, event) for event in agent.take_events()]
    return run


def speaks(*spans: tuple[float, float]) -> Callable[[float], bool]:
    return lambda now: any(start - 1e-9 <= now < end - 1e-9 for start, end in spans)


def test_one_turn_timeline() -> None:
    agent = Agent(AgentConfig(model_delay_ms=300, response_seconds=2.0, generation_speed=4.0))
    run = converse(agent, speaks((0.0, 1.5)), seconds=6.0)

    assert [type(event) for _, event in run.events] == [
        SpeechStarted,
        SpeechStopped,
        ResponseCreated,
        ResponseAudioDone,
        ResponseDone,
    ]
    (turn,) = agent.turns
    assert turn.speech_started_s == pytest.approx(0.0)
    assert turn.speech_stopped_s == pytest.approx(1.5)  # the first quiet frame
    assert turn.vad_decided_s == pytest.approx(1.9)  # + 400 ms hangover
    assert turn.response_created_s == pytest.approx(2.2)  # + 300 ms model delay
    # At 4x real time the first 20 ms frame is ready 5 ms later: the next tick sends it.
    assert turn.first_frame_sent_s == pytest.approx(2.22)
    assert turn.generation_finished_s == pytest.approx(2.7)  # 2 s of audio at 4x
    # ... but real-time pacing sends 100 frames over 2 s.
    assert turn.audio_frames == 100 and turn.audio_ms == 2000
    assert turn.last_frame_sent_s == pytest.approx(2.22 + 99 * TICK_S)
    assert turn.pacing_wait_s == pytest.approx(4.2 - 2.7)
    assert turn.response_latency_s == pytest.approx(0.72)
    assert agent.phase is TurnPhase.IDLE


def test_silence_when_idle_and_speech_while_answering() -> None:
    agent = Agent(AgentConfig(model_delay_ms=0, response_seconds=1.0))
    run = converse(agent, speaks((0.0, 1.0)), seconds=4.0)
    (turn,) = agent.turns
    speaking = [now for now, speech in run.sent if speech]
    assert len(speaking) == 50
    assert speaking[0] == pytest.approx(turn.first_frame_sent_s)
    assert speaking[-1] == pytest.approx(turn.last_frame_sent_s)
    # Nothing before the turn and nothing after it: silence.
    assert all(not speech for now, speech in run.sent if now < turn.first_frame_sent_s - 1e-9)
    assert all(not speech for now, speech in run.sent if now > turn.last_frame_sent_s + 1e-9)


def test_response_frames_are_louder_than_the_vad_threshold() -> None:
    agent = Agent(AgentConfig(model_delay_ms=0))
    for tick in range(100):
        agent.on_frame_received(LOUD if tick < 25 else QUIET, tick * TICK_S)
    frames = [agent.next_frame(tick * TICK_S) for tick in range(100, 200)]
    levels = [level_dbfs(frame) for frame in frames if frame is not None]
    assert len(levels) == 100
    assert min(levels) > agent.config.vad_threshold_dbfs


def test_generation_slower_than_real_time_leaves_gaps_and_no_pacing_wait() -> None:
    agent = Agent(AgentConfig(model_delay_ms=0, response_seconds=1.0, generation_speed=0.5))
    run = converse(agent, speaks((0.0, 1.0)), seconds=6.0)
    (turn,) = agent.turns
    during = [speech for now, speech in run.sent if turn.first_frame_sent_s <= now]
    during = during[: round((turn.last_frame_sent_s - turn.first_frame_sent_s) / TICK_S) + 1]
    assert during.count(True) == 50 and during.count(False) > 40  # starved half the time
    assert turn.last_frame_sent_s == pytest.approx(turn.generation_finished_s, abs=TICK_S)
    assert turn.pacing_wait_s < TICK_S


def test_an_utterance_ending_during_a_response_is_answered_right_after() -> None:
    agent = Agent(AgentConfig(model_delay_ms=300, response_seconds=3.0))
    converse(agent, speaks((0.0, 1.0), (2.0, 2.5)), seconds=9.0)
    first, second = agent.turns
    assert second.speech_stopped_s == pytest.approx(2.5)
    # Its model delay ran out while the first response played; it starts when that ends.
    assert second.response_created_s == pytest.approx(first.last_frame_sent_s)
    assert agent.superseded == 0


def test_only_the_latest_waiting_utterance_is_answered() -> None:
    agent = Agent(AgentConfig(model_delay_ms=300, response_seconds=4.0))
    converse(agent, speaks((0.0, 1.0), (2.0, 2.5), (3.5, 4.0)), seconds=12.0)
    assert [turn.speech_stopped_s for turn in agent.turns] == pytest.approx([1.0, 4.0])
    assert agent.superseded == 1


def test_deadline_reports_the_end_of_the_model_delay() -> None:
    agent = Agent(AgentConfig(model_delay_ms=250))
    assert agent.next_deadline() is None
    for tick in range(60):  # 1 s of speech, then quiet until the VAD decides
        agent.on_frame_received(LOUD if tick < 50 else QUIET, tick * TICK_S)
    for tick in range(60, 71):
        agent.on_frame_received(QUIET, tick * TICK_S)
    (stopped,) = [e for e in agent.take_events() if isinstance(e, SpeechStopped)]
    assert agent.phase is TurnPhase.THINKING
    assert agent.next_deadline() == pytest.approx(stopped.decided_s + 0.25)
    agent.poll(stopped.decided_s + 0.25)
    assert agent.phase is TurnPhase.SPEAKING
    assert [type(e) for e in agent.take_events()] == [ResponseCreated]


@pytest.mark.parametrize(
    "bad",
    [{"generation_speed": 0.0}, {"response_seconds": 0.0}, {"model_delay_ms": -1.0}],
)
def test_config_refuses_impossible_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AgentConfig(**bad)


def test_response_done_carries_the_turn() -> None:
    agent = Agent(AgentConfig(model_delay_ms=0, response_seconds=0.2))
    run = converse(agent, speaks((0.0, 0.5)), seconds=2.0)
    (done,) = run.of(ResponseDone)
    (audio_done,) = run.of(ResponseAudioDone)
    assert isinstance(done, ResponseDone) and isinstance(audio_done, ResponseAudioDone)
    assert done.turn == agent.turns[0]
    assert done.at_s == audio_done.at_s == done.turn.last_frame_sent_s
