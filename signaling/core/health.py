"""What signaling believes about one media server: health, draining, load.

Fed by health polls and by the outcome of forwarded calls; the caller passes
``now`` (any monotonic clock), so tests step time by hand.

Load is the session count the backend last reported, plus calls placed since
that report was asked for, plus calls being placed right now.  Without the
last two, every call arriving between two polls (and every call of a
concurrent burst) would go to the same backend.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class Health(enum.Enum):
    UNKNOWN = "unknown"  # has not answered a poll yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


_ALLOWED: dict[Health, frozenset[Health]] = {
    Health.UNKNOWN: frozenset({Health.HEALTHY, Health.UNHEALTHY}),
    Health.HEALTHY: frozenset({Health.UNHEALTHY}),
    Health.UNHEALTHY: frozenset({Health.HEALTHY}),
}


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A media server's ``GET /healthz``, the fields placement needs."""

    backend_id: int
    sessions: int
    draining: bool


@dataclass(frozen=True, slots=True)
class HealthChanged:
    old: Health
    new: Health
    reason: str


class BackendHealth:
    """One backend's state; every method returns the state change it caused, if any."""

    def __init__(self, unhealthy_after_failures: int) -> None:
        self.unhealthy_after_failures = unhealthy_after_failures
        self.state = Health.UNKNOWN
        self.backend_id: int | None = None
        self.reported_sessions = 0
        self.draining = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_report_at: float | None = None
        self._placed_at: deque[float] = deque()  # placements the last report may not include
        self._in_flight = 0

    # --- derived -----------------------------------------------------------

    @property
    def load(self) -> int:
        return self.reported_sessions + len(self._placed_at) + self._in_flight

    @property
    def placeable(self) -> bool:
        return self.state is Health.HEALTHY and not self.draining

    # --- inputs ------------------------------------------------------------

    def poll_succeeded(self, report: HealthReport, asked_at: float) -> HealthChanged | None:
        """A poll sent at ``asked_at`` got ``report``.

        Placements that finished before the poll was sent are in the reported
        count already (the backend counted them before it answered 201).
        """
        self.backend_id = report.backend_id
        self.reported_sessions = report.sessions
        self.draining = report.draining
        self.consecutive_failures = 0
        self.last_error = None
        self.last_report_at = asked_at
        while self._placed_at and self._placed_at[0] < asked_at:
            self._placed_at.popleft()
        return self._set(Health.HEALTHY, "poll answered")

    def poll_failed(self, error: str) -> HealthChanged | None:
        return self._failed(error, conclusive=False)

    def forward_failed(self, error: str, *, conclusive: bool) -> HealthChanged | None:
        """Forwarding a call failed.

        ``conclusive`` (connection refused or reset) takes the backend out at
        once, rather than sending more callers to it until the next polls fail;
        the poller puts it back when it answers again.
        """
        return self._failed(error, conclusive=conclusive)

    def saw_draining(self) -> None:
        """It answered a call with 503 draining: skip it until a poll says otherwise."""
        self.draining = True

    def placement_started(self) -> None:
        self._in_flight += 1

    def placement_finished(self, placed_at: float | None) -> None:
        """``placed_at`` when the backend took the session, None when it did not."""
        assert self._in_flight > 0, "placement_finished without placement_started"
        self._in_flight -= 1
        if placed_at is not None:
            self._placed_at.append(placed_at)

    # --- internals -----------------------------------------------------------

    def _failed(self, error: str, *, conclusive: bool) -> HealthChanged | None:
        self.consecutive_failures += 1
        self.last_error = error
        if conclusive or self.consecutive_failures >= self.unhealthy_after_failures:
            return self._set(Health.UNHEALTHY, error)
        return None

    def _set(self, new: Health, reason: str) -> HealthChanged | None:
        old = self.state
        if new is old:
            return None
        assert new in _ALLOWED[old], f"health {old.value} -> {new.value} is not a transition"
        self.state = new
        return HealthChanged(old, new, reason)
