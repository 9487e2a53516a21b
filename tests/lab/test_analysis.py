from __future__ import annotations

import pytest

from lab.report.analysis import Spread, gaps, linear_fit, outage_around, percentile
from lab.report.text import describe_spread


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


def test_frames_in_flight_for_seconds_still_end_in_the_events_silence() -> None:
    # A loaded caller's loop hands over 1.4 s of queued frames after the move, then nothing.
    arrivals = frames(0, 9.4)
    outage = outage_around(arrivals, 8.0, 20.0)
    assert not outage.recovered and outage.last_before_s == pytest.approx(9.38)


def test_audio_that_stopped_seconds_after_the_event_for_good_never_came_back() -> None:
    # Four seconds of queued frames drain after the move, with a stall among them.
    arrivals = [*frames(0, 10.6), *frames(10.8, 13.4)]
    outage = outage_around(arrivals, 9.5, 19.0)
    assert not outage.recovered and outage.last_before_s == pytest.approx(13.38)


def test_the_events_silence_is_the_longest_one_near_it_not_a_stall_beside_it() -> None:
    arrivals = [*frames(0, 5.1), *frames(5.3, 5.5), *frames(8.0, 10.0)]  # stall, then the outage
    outage = outage_around(arrivals, 5.0, 10.0)
    assert outage.last_before_s == pytest.approx(5.48) and outage.first_after_s == 8.0


def test_gaps_percentile_and_fit() -> None:
    assert gaps([0.0, 0.02, 0.1]) == pytest.approx([0.02, 0.08])
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([], 50) is None
    slope, intercept, r2 = linear_fit([0, 1, 2], [1, 3, 5])
    assert (slope, intercept, r2) == pytest.approx((2, 1, 1))


def test_a_silence_the_event_falls_into_is_the_events_even_if_it_began_just_before() -> None:
    # A loaded machine delivers in clumps: the last frame came 110 ms before the move.
    arrivals = [*frames(0, 4.9), 4.95, *frames(7.5, 10.0)]
    outage = outage_around(arrivals, 5.06, 10.0)
    assert outage.recovered and outage.last_before_s == 4.95
    assert outage.recovery_s(5.06) == pytest.approx(2.44)


def test_a_stutter_before_the_event_is_not_its_outage() -> None:
    arrivals = [*frames(0, 4.0), *frames(4.2, 10.0)]  # a 220 ms stall at 4 s, then fine
    assert outage_around(arrivals, 5.0, 10.0).gap_s == 0


def test_a_spread_counts_a_trial_that_never_ended_as_the_longest() -> None:
    spread = Spread((3.0, None, 1.0, 2.0, 5.0, 4.0, None, 0.5))
    assert (spread.trials, spread.ended) == (8, 6)
    assert spread.min == 0.5
    assert spread.median == 3.0  # rank 4 of 0.5, 1, 2, 3, 4, 5, never, never
    assert spread.p95 is None and spread.max is None
    assert Spread((2.0, None, None)).median is None
    assert Spread(()).median is None
    finite = Spread(tuple(float(v) for v in range(1, 21)))
    assert (finite.median, finite.p95, finite.max) == (10.0, 19.0, 20.0)


def test_a_spread_renders_for_a_reader_saying_how_many_never_ended() -> None:
    assert describe_spread(Spread((1.04, 2.0, 3.26))) == (
        "median 2.0 s, p95 3.3 s, max 3.3 s over 3 moves"
    )
    assert describe_spread(Spread((1.0, None))) == (
        "median 1.0 s, p95 never, max never over 2 moves (1 never)"
    )
    assert describe_spread(Spread((None, None))) == "never, on all 2 moves"
    assert describe_spread(Spread((0.42,))) == "0.4 s"
    assert describe_spread(Spread((None,)), never="not while observed") == "not while observed"
    json = Spread((1.23456, None)).to_json()
    assert json == {
        "trials": 2,
        "ended": 1,
        "median": 1.235,
        "p95": None,
        "max": None,
        "values": [1.235, None],
    }
