"""The search for the highest rate a path forwards with less than the allowed loss (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """What one step at an offered rate showed."""

    offered_pps: float
    # What the generator actually sent: the rate the loss belongs to.
    sent_pps: float
    loss: float
    # received / sending time: under overload, close to what the path can do.
    delivered_pps: float


class RateSearch:
    """Bisection, seeded by what an overloaded step still delivered.

    Rates are bracketed by what was sent, not what was asked for: a generator
    that falls short at some step still yields a true statement about the path.
    The first probe is the ceiling (what the generator can offer).  If it
    passes, the path is at least as fast as the generator and the search ends.
    If not, the path's capacity is usually near what it delivered while
    overloaded, so the next probe sits just under that and the upper bound is
    *assumed* at ``delivered * HEADROOM``; bisection follows.  An assumed bound
    is tested before the search may end on it: should it pass (a path whose
    throughput collapses when overloaded, or an overload step that was
    disturbed), the bracket reopens up to the lowest rate that really failed.
    """

    # Capacity is assumed within 10 % above what an overloaded step delivered.
    HEADROOM = 1.10
    # The first guess after an overload: just under the delivered rate, so it
    # usually passes and the bracket is then narrow.
    FIRST_GUESS = 0.97
    # Stop once the bracket is this narrow: finer than step-to-step noise on a
    # shared 2-core machine, so further steps would only measure the noise.
    RESOLUTION = 0.02

    def __init__(self, ceiling_pps: float, loss_limit: float) -> None:
        self.loss_limit = loss_limit
        self.low_pps = 0.0  # highest rate that passed
        self.high_pps = ceiling_pps  # the upper bound: measured or assumed
        self._lowest_failure_pps = ceiling_pps
        self._high_measured = True
        self._ceiling_pps = ceiling_pps
        self._next_pps: float | None = ceiling_pps
        self._seeded = False
        self.ceiling_passed = False

    def passed(self, probe: Probe) -> bool:
        return probe.loss < self.loss_limit

    @property
    def _narrow(self) -> bool:
        return self.low_pps > 0 and self.high_pps <= self.low_pps * (1 + self.RESOLUTION)

    @property
    def done(self) -> bool:
        return self.ceiling_passed or (self._narrow and self._high_measured)

    def next_rate(self) -> float:
        if self._next_pps is not None:
            rate, self._next_pps = self._next_pps, None
            return rate
        if self._narrow and not self._high_measured:
            return self.high_pps
        return (self.low_pps + self.high_pps) / 2

    def record(self, probe: Probe) -> None:
        if self.passed(probe):
            self.low_pps = max(self.low_pps, probe.sent_pps)
            # The generator is handed rates rounded to 0.1/s: compare loosely.
            if probe.offered_pps >= self._ceiling_pps * 0.999:
                self.ceiling_passed = True
            if self.low_pps >= self.high_pps * 0.999:
                # The assumed bound passed: reopen up to what really failed.
                self.high_pps = self._lowest_failure_pps
                self._high_measured = True
            return
        self._lowest_failure_pps = min(self._lowest_failure_pps, probe.sent_pps)
        if probe.sent_pps <= self.high_pps:
            self.high_pps = probe.sent_pps
            self._high_measured = True
        if not self._seeded:
            self._seeded = True
            bound = probe.delivered_pps * self.HEADROOM
            if self.low_pps < bound < self.high_pps:
                self.high_pps = bound
                self._high_measured = False
            guess = probe.delivered_pps * self.FIRST_GUESS
            if self.low_pps < guess < self.high_pps:
                self._next_pps = guess
