from __future__ import annotations

import pytest

from lab.report.analysis import gaps, linear_fit, outage_around, percentile


def frames(start: float, end: float, step: float = 0.02) -> list[float]:
    count = round((end - start) / step)
    return [round(start + i * step, 6) for i in range(count)]


def test_outage_with_recovery_starts_at_last_frame_in_flight() -> None:
    arrivals = frames(0, 5.03) + frames(9.0, 12.0)  # event at 5.0, frames in flight to 5.02
    outage = outage_around(arrivals, 5.0, 12.0)
    assert outage.recovered
    assert outage.last_before_s == 5.02
    assert outage.recovery_s(5.0) == pytest.approx(4.0)
    assert outage.gap_s == pytest.approx(3.98)


def test_outage_that_never_recovers_runs_to_end_of_observation() -> None:
    arrivals = frames(0, 5.0)
    outage = outage_around(arrivals, 5.0, 20.0)
    assert not outage.recovered
    assert outage.recovery_s(5.0) is None
    assert outage.gap_s == pytest.approx(20.0 - 4.98)


def test_an_event_that_interrupts_nothing_has_no_gap() -> None:
    arrivals = frames(0, 10.0)
    outage = outage_around(arrivals, 5.0, 10.0)
    assert outage.recovered and outage.gap_s == 0 and outage.recovery_s(5.0) == 0


def test_a_later_unrelated_gap_is_not_blamed_on_the_event() -> None:
    arrivals = frames(0, 8.0) + frames(9.0, 10.0)
    assert outage_around(arrivals, 5.0, 10.0, window_s=1.0).gap_s == 0


def test_gaps_percentile_and_fit() -> None:
    assert gaps([0.0, 0.02, 0.1]) == pytest.approx([0.02, 0.08])
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([], 50) is None
    slope, intercept, r2 = linear_fit([0, 1, 2], [1, 3, 5])
    assert (slope, intercept, r2) == pytest.approx((2, 1, 1))
