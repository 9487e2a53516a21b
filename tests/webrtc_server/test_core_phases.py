"""The session lifecycle: transitions, close reasons, setup milestones."""

from __future__ import annotations

from webrtc_server.core.phases import (
    TRANSITIONS,
    CloseReason,
    Milestone,
    Phase,
    SessionLifecycle,
)


def test_a_normal_life() -> None:
    life = SessionLifecycle(created_s=100.0)
    assert life.setting_up
    assert life.advance(Phase.ANSWERED, 100.008) is not None
    assert life.advance(Phase.CONNECTED, 100.050) is not None
    assert not life.setting_up
    transition = life.close(CloseReason.DELETED, 105.0)
    assert transition is not None and (transition.old, transition.new) == (
        Phase.CONNECTED,
        Phase.CLOSED,
    )
    assert life.close_reason is CloseReason.DELETED and life.closed_s == 105.0


def test_forbidden_transitions_are_refused_not_applied() -> None:
    life = SessionLifecycle(created_s=0.0)
    assert life.advance(Phase.CONNECTED, 1.0) is None  # never skips the answer
    assert life.phase is Phase.NEW
    life.close(CloseReason.SETUP_TIMEOUT, 15.0)
    # Late news after close (a "connected" racing the timeout) changes nothing.
    assert life.advance(Phase.CONNECTED, 15.1) is None
    assert life.close(CloseReason.DELETED, 15.2) is None
    assert life.phase is Phase.CLOSED and life.close_reason is CloseReason.SETUP_TIMEOUT


def test_closed_is_terminal_and_reachable_from_everywhere_else() -> None:
    assert TRANSITIONS[Phase.CLOSED] == frozenset()
    for phase in Phase:
        if phase is not Phase.CLOSED:
            assert Phase.CLOSED in TRANSITIONS[phase]


def test_milestones_keep_the_first_time_and_report_ms_since_the_offer() -> None:
    life = SessionLifecycle(created_s=10.0)
    assert life.mark(Milestone.ANSWER, 10.0075)
    assert not life.mark(Milestone.ANSWER, 11.0)
    life.mark(Milestone.DTLS_CONNECTED, 10.05)
    assert life.setup_ms() == {
        "answer": 7.5,
        "ice_connected": None,
        "dtls_connected": 50.0,
        "first_audio_in": None,
        "datachannel_open": None,
    }


def test_setup_expires_only_while_setting_up() -> None:
    life = SessionLifecycle(created_s=0.0)
    assert not life.setup_expired(14.9, 15.0)
    assert life.setup_expired(15.0, 15.0)
    life.advance(Phase.ANSWERED, 0.01)
    assert life.setup_expired(20.0, 15.0)
    life.advance(Phase.CONNECTED, 0.05)
    assert not life.setup_expired(20.0, 15.0)
