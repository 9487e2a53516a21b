"""Pure helpers that turn timelines into the numbers scenarios report.

Every function takes plain lists and floats (seconds on the run's clock) so the
numbers in a report can be recomputed from ``results.json`` alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Audio frames are 20 ms apart; anything over this is a stall a listener hears.
AUDIBLE_GAP_S = 0.1


@dataclass(frozen=True, slots=True)
class Outage:
    """The interruption of one audio direction around an event."""

    last_before_s: float | None  # last frame before the event
    first_after_s: float | None  # first frame after the event (None: never came back)
    observed_until_s: float  # end of observation

    @property
    def recovered(self) -> bool:
        return self.first_after_s is not None

    @property
    def gap_s(self) -> float:
        """Silence around the event; up to the end of observation if never recovered."""
        start = self.last_before_s if self.last_before_s is not None else 0.0
        end = self.first_after_s if self.first_after_s is not None else self.observed_until_s
        return max(0.0, end - start)

    def recovery_s(self, event_s: float) -> float | None:
        """From the event to the first frame after it (None: never)."""
        return None if self.first_after_s is None else self.first_after_s - event_s


def outage_around(
    arrivals_s: Sequence[float], event_s: float, until_s: float, window_s: float = 1.0
) -> Outage:
    """The audio interruption that ``event_s`` caused in a sorted arrival list.

    The outage is the first audible silence (> :data:`AUDIBLE_GAP_S`) that
    starts between just before the event and ``window_s`` after it: frames
    already in flight arrive a little after any event, so the silence starts
    at the last of them, not at the event.  A silence still running at
    ``until_s`` means the direction never recovered.  No such silence: the
    event interrupted nothing (gap 0, recovery 0).
    """
    earliest = event_s - AUDIBLE_GAP_S
    previous: float | None = None
    for t in arrivals_s:
        if previous is not None and previous >= earliest and t - previous > AUDIBLE_GAP_S:
            if previous > event_s + window_s:
                break
            return Outage(previous, t, until_s)
        previous = t
    else:
        if previous is None or previous < earliest:
            return Outage(previous, None, until_s)  # silent since before the event
        if previous <= event_s + window_s and until_s - previous > AUDIBLE_GAP_S:
            return Outage(previous, None, until_s)
    return Outage(event_s, event_s, until_s)


def gaps(arrivals_s: Sequence[float]) -> list[float]:
    """Inter-arrival times, seconds."""
    return [b - a for a, b in itertools.pairwise(arrivals_s)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares y = slope * x + intercept; returns (slope, intercept, r^2)."""
    n = len(xs)
    if n < 2:
        raise ValueError("need at least two points")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x values are equal")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return slope, intercept, r2


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def fmt_ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"
