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
# Audio that stops after an event and is silent for this long until observation ends
# never came back, however long the frames in flight took to drain (a loaded
# receiver decodes seconds late); a call's last frames come well within this of its end.
SILENT_TO_THE_END_S = 1.0


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
    arrivals_s: Sequence[float], event_s: float, until_s: float, window_s: float = 2.0
) -> Outage:
    """The audio interruption that ``event_s`` caused in a sorted arrival list.

    The outage is the longest audible silence (> :data:`AUDIBLE_GAP_S`) that
    ends after the event and starts no later than ``window_s`` after it.
    Frames already in flight arrive after any event (seconds after it, on a
    loaded machine), so the silence starts at the last of them, not at the
    event; audio that was already stuttering may have fallen silent a little
    before it, so a silence the event falls into is the event's; and the
    longest such silence is the event's, not a short stall next to it.  A
    silence still running at ``until_s`` means the direction never recovered
    (it is the longest of all); so does audio that stopped any time after the
    event and stayed silent for :data:`SILENT_TO_THE_END_S` or more until
    ``until_s``.  No silence at all: the event interrupted nothing (gap 0,
    recovery 0).
    """
    if arrivals_s and arrivals_s[-1] >= event_s and until_s - arrivals_s[-1] >= SILENT_TO_THE_END_S:
        return Outage(arrivals_s[-1], None, until_s)
    found: Outage | None = None
    previous: float | None = None
    for t in arrivals_s:
        if previous is not None and previous > event_s + window_s:
            break
        silence = t - previous if previous is not None and t > event_s else 0.0
        if silence > AUDIBLE_GAP_S and (found is None or silence > found.gap_s):
            assert previous is not None
            found = Outage(previous, t, until_s)
        previous = t
    else:
        if previous is None:
            return Outage(None, None, until_s)  # silent from the start
        if previous <= event_s + window_s and until_s - previous > AUDIBLE_GAP_S:
            return Outage(previous, None, until_s)  # silent since, to the end
    return found or Outage(event_s, event_s, until_s)


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


@dataclass(frozen=True, slots=True)
class Spread:
    """How long repeated trials took, where a trial may never have ended.

    ``values`` holds one figure per trial (seconds, say), ``None`` for a trial
    that had not ended when observation stopped (a direction that never came
    back).  Such a trial counts as longer than any that ended, so a quantile
    that lands among them is ``None`` too ("never"): three of eight moves
    never recovering make the median finite but the 95th percentile "never".
    """

    values: tuple[float | None, ...]

    @property
    def trials(self) -> int:
        return len(self.values)

    @property
    def ended(self) -> int:
        return sum(value is not None for value in self.values)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..100); None: never (or no trials)."""
        if not self.values:
            return None
        ordered = sorted(self.values, key=lambda v: math.inf if v is None else v)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[min(rank, len(ordered)) - 1]

    @property
    def median(self) -> float | None:
        return self.quantile(50)

    @property
    def p95(self) -> float | None:
        return self.quantile(95)

    @property
    def max(self) -> float | None:
        return self.quantile(100)

    @property
    def min(self) -> float | None:
        return self.quantile(0)

    def to_json(self, digits: int = 3) -> dict[str, object]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "trials": self.trials,
            "ended": self.ended,
            "median": rounded(self.median),
            "p95": rounded(self.p95),
            "max": rounded(self.max),
            "values": [rounded(value) for value in self.values],
        }


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
