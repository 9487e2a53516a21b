"""What the emulator itself costs: how late it sends, and how much CPU it burns.

A scenario that asks for 50 ms of delay gets 50 ms plus the emulator's own
lateness (timer granularity, the event loop being busy).  Reports subtract it,
or at least state it: "the emulator added X us p50 / Y us p99 and used Z % of
a core".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class LatenessHistogram:
    """Log-spaced buckets, 40 per decade (each ~6 % wide), from 1 us up to 100 s.

    Recording is one log10 and one increment, cheap enough for every packet;
    quantiles come back as the upper edge of their bucket (an overestimate of at
    most 6 %), never below the true value.
    """

    FLOOR_S = 1e-6  # lateness below this is "on time": under a clock read's cost
    STEPS_PER_DECADE = 40
    DECADES = 8  # 1 us .. 100 s

    def __init__(self) -> None:
        self.buckets = [0] * (self.STEPS_PER_DECADE * self.DECADES + 1)
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def _index(self, value_s: float) -> int:
        if value_s <= self.FLOOR_S:
            return 0
        index = math.ceil(self.STEPS_PER_DECADE * math.log10(value_s / self.FLOOR_S) - 1e-9)
        return min(index, len(self.buckets) - 1)

    def upper_edge(self, index: int) -> float:
        return self.FLOOR_S * 10 ** (index / self.STEPS_PER_DECADE)

    def record(self, lateness_s: float) -> None:
        value = max(0.0, lateness_s)
        self.buckets[self._index(value)] += 1
        self.count += 1
        self.sum_s += value
        if value > self.max_s:
            self.max_s = value

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) in seconds; 0.0 when nothing was recorded."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= rank:
                return min(self.upper_edge(index), self.max_s)
        return self.max_s  # pragma: no cover - the loop always reaches rank

    def cumulative(self, bounds_s: list[float]) -> list[tuple[float, int]]:
        """``(bound, samples whose bucket lies at or below bound)`` for each bound."""
        result = []
        for bound in bounds_s:
            last = self._index(bound)
            if self.upper_edge(last) > bound * (1 + 1e-9):
                last -= 1
            result.append((bound, sum(self.buckets[: last + 1])))
        return result

    def summary_us(self) -> dict[str, float | int]:
        def us(value_s: float) -> float:
            return round(value_s * 1e6, 1)

        return {
            "count": self.count,
            "mean": us(self.sum_s / self.count) if self.count else 0.0,
            "p50": us(self.quantile(0.50)),
            "p90": us(self.quantile(0.90)),
            "p99": us(self.quantile(0.99)),
            "max": us(self.max_s),
        }


TRANSPORTS = ("udp", "tcp")


class OverheadMeter:
    """Lateness of every send, per transport, plus the process's CPU time since it started.

    The transports are kept apart because a TCP chunk can also be late for a
    reason that is not the emulator's: the receiver not reading (back-pressure).
    UDP lateness is the emulator alone, and it is what media sees.
    """

    def __init__(self, wall_clock: Callable[[], float], cpu_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        self._cpu_clock = cpu_clock
        self._wall_start = wall_clock()
        self._cpu_start = cpu_clock()
        self.lateness = {transport: LatenessHistogram() for transport in TRANSPORTS}

    def cpu_s(self) -> float:
        return self._cpu_clock() - self._cpu_start

    def summary(self, packets: int) -> dict[str, Any]:
        """Lateness in microseconds, CPU as a share of one core and per packet handled."""
        wall = self._wall_clock() - self._wall_start
        cpu = self.cpu_s()
        return {
            "lateness_us": {name: hist.summary_us() for name, hist in self.lateness.items()},
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "cpu_percent_of_core": round(100.0 * cpu / wall, 2) if wall > 0 else 0.0,
            "packets": packets,
            # Includes idle work (timers, the control API): an upper bound per packet.
            "cpu_us_per_packet": round(cpu * 1e6 / packets, 2) if packets else None,
        }
