"""The rate search against simulated paths: `pytest benchmarks/test_search.py`.

A simulated path forwards everything up to its capacity and drops the rest,
optionally delivering less than its capacity when overloaded (a path whose
throughput collapses), so the search's answer can be checked exactly.
"""

from __future__ import annotations

import pytest
from _search import Probe, RateSearch

LOSS_LIMIT = 0.01


def highest_passing(capacity_pps: float) -> float:
    """The rate above which a path of this capacity loses at least the limit."""
    return capacity_pps / (1 - LOSS_LIMIT)


def run_search(
    capacity_pps: float, ceiling_pps: float, steps: int, collapse: float = 1.0
) -> RateSearch:
    search = RateSearch(ceiling_pps, loss_limit=LOSS_LIMIT)
    for _ in range(steps):
        offered = search.next_rate()
        overloaded = offered > capacity_pps
        delivered = capacity_pps * collapse if overloaded else offered
        search.record(Probe(offered, offered, 1 - delivered / offered, delivered))
        if search.done:
            break
    return search


@pytest.mark.parametrize("capacity", [30_000.0, 150_000.0, 420_000.0, 900_000.0])
def test_finds_the_capacity_within_the_resolution(capacity: float) -> None:
    search = run_search(capacity, ceiling_pps=1_000_000.0, steps=8)
    assert search.done
    assert search.low_pps < highest_passing(capacity) <= search.high_pps
    assert search.low_pps >= highest_passing(capacity) * (1 - RateSearch.RESOLUTION)


def test_a_path_faster_than_the_generator_ends_at_the_ceiling() -> None:
    search = run_search(2_000_000.0, ceiling_pps=1_000_000.0, steps=8)
    assert search.ceiling_passed and search.done
    assert search.low_pps == 1_000_000.0


def test_a_path_whose_throughput_collapses_is_not_capped_by_the_overload_step() -> None:
    # Overloaded, it delivers only 40 % of what it sustains (80 k/s), so the
    # bound assumed from that step (88 k/s) is too low: it must be tested, pass,
    # and the search climb on towards the real 200 k/s.
    search = run_search(200_000.0, ceiling_pps=1_000_000.0, steps=30, collapse=0.4)
    # Here any overload collapses, so the highest passing rate is the capacity.
    assert search.done
    assert search.low_pps <= 200_000.0 < search.high_pps
    assert search.low_pps >= 200_000.0 * (1 - RateSearch.RESOLUTION)


def test_rates_are_bracketed_by_what_was_sent_not_what_was_asked() -> None:
    search = RateSearch(1_000_000.0, loss_limit=0.01)
    search.next_rate()
    # Asked for 1 M/s, the generator managed 300 k/s, and the path lost 50 %.
    search.record(Probe(1_000_000.0, 300_000.0, 0.5, 150_000.0))
    assert search.high_pps <= 300_000.0
