"""A media session's lifecycle: phases, close reasons and the setup timeline.

The phase is an Enum with an explicit transition table; the timeline records
when each setup milestone was first reached, so ``/sessions`` can show where a
slow or stuck setup spent its time.  Times are whatever clock the shell passes
(monotonic seconds); only differences are ever reported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Phase(enum.Enum):
    NEW = "new"  # offer received, no answer yet
    ANSWERED = "answered"  # answer sent; waiting for the caller's ICE checks and DTLS
    CONNECTED = "connected"  # DTLS up: media can flow
    CLOSED = "closed"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.NEW: frozenset({Phase.ANSWERED, Phase.CLOSED}),
    Phase.ANSWERED: frozenset({Phase.CONNECTED, Phase.CLOSED}),
    Phase.CONNECTED: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class CloseReason(enum.Enum):
    DELETED = "deleted"  # DELETE /sessions/{id}: the caller hung up through signaling
    SETUP_TIMEOUT = "setup_timeout"  # never connected: aioice would wait forever
    FAILED = "failed"  # connection state "failed" (ICE or DTLS)
    PEER_CLOSED = "peer_closed"  # connection state "closed": consent expired, DTLS close
    ANSWER_ERROR = "answer_error"  # the offer could not be answered
    SHUTDOWN = "shutdown"  # the server is stopping


class Milestone(enum.Enum):
    """Setup steps, in the order they normally happen."""

    ANSWER = "answer"
    ICE_CONNECTED = "ice_connected"
    DTLS_CONNECTED = "dtls_connected"
    FIRST_AUDIO_IN = "first_audio_in"
    DATACHANNEL_OPEN = "datachannel_open"


@dataclass(frozen=True, slots=True)
class Transition:
    old: Phase
    new: Phase
    at_s: float


@dataclass
class SessionLifecycle:
    """Phase, close reason and setup milestones of one session."""

    created_s: float
    phase: Phase = Phase.NEW
    close_reason: CloseReason | None = None
    closed_s: float | None = None
    milestones: dict[Milestone, float] = field(default_factory=dict)

    def advance(self, new: Phase, now_s: float) -> Transition | None:
        """Move to ``new``; None when the table forbids it (e.g. late news after close)."""
        if new not in TRANSITIONS[self.phase]:
            return None
        transition = Transition(self.phase, new, now_s)
        self.phase = new
        return transition

    def close(self, reason: CloseReason, now_s: float) -> Transition | None:
        """Close for ``reason``; the first reason wins, later ones return None."""
        transition = self.advance(Phase.CLOSED, now_s)
        if transition is not None:
            self.close_reason = reason
            self.closed_s = now_s
        return transition

    def mark(self, milestone: Milestone, now_s: float) -> bool:
        """Record ``milestone`` the first time only; True if this was the first."""
        if milestone in self.milestones:
            return False
        self.milestones[milestone] = now_s
        return True

    @property
    def setting_up(self) -> bool:
        return self.phase in (Phase.NEW, Phase.ANSWERED)

    def setup_expired(self, now_s: float, timeout_s: float) -> bool:
        """Still not connected ``timeout_s`` after the offer arrived."""
        return self.setting_up and now_s - self.created_s >= timeout_s

    def ms_since_created(self, at_s: float | None) -> float | None:
        return None if at_s is None else round((at_s - self.created_s) * 1000, 1)

    def setup_ms(self) -> dict[str, float | None]:
        """Every milestone in ms after the offer arrived (None if not reached)."""
        return {m.value: self.ms_since_created(self.milestones.get(m)) for m in Milestone}
