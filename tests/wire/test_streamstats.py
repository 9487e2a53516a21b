from __future__ import annotations

from wire.streamstats import ArrivalStats


def test_clean_stream() -> None:
    stats = ArrivalStats()
    for i in range(100):
        stats.on_frame(i * 0.02, i * 960)
    snap = stats.snapshot(sent=100)
    assert snap == {
        "packets_sent": 100,
        "packets_received": 100,
        "packets_lost": 0,
        "loss_ratio": 0.0,
        "max_gap_ms": 20.0,
    }


def test_holes_in_pts_count_as_lost_and_stalls_as_gaps() -> None:
    stats = ArrivalStats()
    arrivals = [(0.00, 0), (0.02, 1), (0.50, 5), (0.52, 6)]  # frames 2-4 missing
    for t, frame in arrivals:
        stats.on_frame(t, frame * 960)
    snap = stats.snapshot()
    assert snap["packets_lost"] == 3
    assert snap["loss_ratio"] == round(3 / 7, 6)
    assert snap["max_gap_ms"] == 480.0
    assert stats.gaps == [(0.02, 0.48)]


def test_a_stream_that_never_returns_counts_its_tail() -> None:
    stats = ArrivalStats()
    for i in range(10):
        stats.on_frame(i * 0.02, i * 960)
    snap = stats.snapshot(sent=60, until_s=1.2)
    assert snap["packets_lost"] == 50
    assert snap["max_gap_ms"] == 1020.0
