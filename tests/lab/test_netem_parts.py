"""The emulator's smaller parts: impairment requests, address pool, overhead, scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from lab.netem.core import BurstLoss, Direction, LinkConfig
from lab.netem.impair import apply, config_json, parse_impair
from lab.netem.overhead import LatenessHistogram, OverheadMeter
from lab.netem.pool import AddressPool
from lab.netem.scheduler import DeliveryScheduler

# --- impairment requests ------------------------------------------------------------


def test_fields_left_out_keep_their_values() -> None:
    config = LinkConfig(delay_ms=40, loss=0.1, rate_kbps=100)
    request = parse_impair({"direction": "up", "jitter_ms": 5, "rate_kbps": None})
    assert request.directions == (Direction.UP,)
    assert apply(config, request) == LinkConfig(delay_ms=40, jitter_ms=5, loss=0.1)


def test_reset_clears_first_then_applies_what_is_given() -> None:
    config = LinkConfig(delay_ms=40, loss=0.1, blackhole=True)
    assert apply(config, parse_impair({"reset": True})) == LinkConfig()
    assert apply(config, parse_impair({"reset": True, "delay_ms": 5})) == LinkConfig(delay_ms=5)


def test_direction_defaults_to_both() -> None:
    assert parse_impair({}).directions == (Direction.UP, Direction.DOWN)


def test_both_burst_forms_are_understood() -> None:
    explicit = parse_impair({"burst": {"p": 0.01, "r": 0.5, "loss_bad": 0.9}}).changes["burst"]
    assert explicit == BurstLoss(p=0.01, r=0.5, loss_bad=0.9)
    by_mean = parse_impair({"burst": {"loss": 0.05, "mean_burst_packets": 4}}).changes["burst"]
    assert by_mean == BurstLoss.from_mean(0.05, 4)
    assert parse_impair({"burst": None}).changes["burst"] is None


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([], "JSON object"),
        ({"delay": 5}, "unknown fields"),
        ({"direction": "sideways"}, "direction"),
        ({"delay_ms": "5"}, "number"),
        ({"loss": True}, "number"),
        ({"loss": 2}, "loss"),
        ({"blackhole": 1}, "true or false"),
        ({"rate_kbps": -3}, "rate_kbps"),
        ({"burst": {"p": 0.1}}, "burst takes"),
        ({"burst": {"p": 0.1, "r": 0}}, "r must be > 0"),
        ({"burst": [0.1, 0.5]}, "object or null"),
        ({"reset": "yes"}, "reset"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_impair(body)


def test_config_json_shows_every_field() -> None:
    shown = config_json(LinkConfig(burst=BurstLoss.from_mean(0.05, 4)))
    assert set(shown) == {
        "delay_ms",
        "jitter_ms",
        "loss",
        "burst",
        "rate_kbps",
        "queue_limit_ms",
        "blackhole",
        "reorder",
    }
    assert shown["burst"]["mean_loss"] == pytest.approx(0.05)


# --- address pool ----------------------------------------------------------------------


def test_pool_ranges_and_singles() -> None:
    pool = AddressPool.parse("127.0.0.2-127.0.0.4, 127.0.0.9,127.0.0.3")
    assert pool.addresses == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"]
    assert pool.describe() == "127.0.0.2..127.0.0.9 (4 addresses)"


def test_pool_hands_out_round_robin_avoiding_the_current_address() -> None:
    pool = AddressPool.parse("127.0.0.2-127.0.0.3")
    assert [pool.take(avoid="127.0.0.2") for _ in range(3)] == ["127.0.0.3"] * 3
    assert [pool.take() for _ in range(3)] == ["127.0.0.2", "127.0.0.3", "127.0.0.2"]
    with pytest.raises(ValueError, match="nothing but"):
        AddressPool.parse("127.0.0.5").take(avoid="127.0.0.5")


@pytest.mark.parametrize("text", ["", "127.0.0.9-127.0.0.2", "127.0.0.1-::1", "localhost"])
def test_bad_pools_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        AddressPool.parse(text)


# --- overhead ------------------------------------------------------------------------------


def test_histogram_quantiles_bound_the_truth_from_above_within_six_percent() -> None:
    histogram = LatenessHistogram()
    samples = [i * 1e-6 for i in range(1, 1001)]  # 1 us .. 1 ms, uniform
    for value in samples:
        histogram.record(value)
    for q, truth in ((0.5, 500e-6), (0.99, 990e-6)):
        assert truth <= histogram.quantile(q) <= truth * 1.06
    assert histogram.max_s == pytest.approx(1e-3)
    assert histogram.quantile(1.0) == pytest.approx(1e-3)
    summary = histogram.summary_us()
    assert summary["count"] == 1000
    assert summary["mean"] == pytest.approx(500.5, abs=0.1)


def test_histogram_cumulative_counts_never_overstate() -> None:
    histogram = LatenessHistogram()
    for value in (0.0, 5e-6, 50e-6, 2e-3, 30.0):
        histogram.record(value)
    counts = dict(histogram.cumulative([1e-5, 1e-4, 1e-3, 1.0]))
    assert counts == {1e-5: 2, 1e-4: 3, 1e-3: 3, 1.0: 4}
    assert LatenessHistogram().quantile(0.5) == 0.0


def test_overhead_meter_reports_cpu_share_and_per_packet_cost() -> None:
    wall = iter([100.0, 110.0])
    cpu = iter([5.0, 5.5, 5.5])
    meter = OverheadMeter(lambda: next(wall), lambda: next(cpu))
    summary = meter.summary(packets=1000)
    assert summary["cpu_percent_of_core"] == pytest.approx(5.0)
    assert summary["cpu_us_per_packet"] == pytest.approx(500.0)
    assert meter.cpu_s() == pytest.approx(0.5)


# --- delivery scheduler (virtual time, a stand-in loop) ----------------------------------


class _Timer:
    def __init__(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.delay_s = delay_s
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.fired = True
        self.callback()


class _Loop:
    """Just enough of an event loop: records timers; the test fires them."""

    def __init__(self) -> None:
        self.timers: list[_Timer] = []

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(delay_s, callback)
        self.timers.append(timer)
        return timer

    def live(self) -> list[_Timer]:
        return [t for t in self.timers if not (t.cancelled or t.fired)]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scheduler() -> tuple[DeliveryScheduler, _Loop, _Clock, list[str], list[float]]:
    loop, clock = _Loop(), _Clock()
    sent: list[str] = []
    lateness: list[float] = []
    scheduler = DeliveryScheduler(cast(asyncio.AbstractEventLoop, loop), clock, lateness.append)
    return scheduler, loop, clock, sent, lateness


def _send(sent: list[str]) -> Callable[[Any, bytes], None]:
    return lambda target, data: sent.append(f"{target}:{data.decode()}")


def test_due_packets_go_at_once_when_nothing_is_waiting() -> None:
    scheduler, loop, clock, sent, lateness = _scheduler()
    clock.now = 1.0
    scheduler.schedule(1.0, _send(sent), "a", b"1")
    assert sent == ["a:1"]
    assert lateness == [0.0]
    assert loop.timers == []


def test_packets_wait_for_their_time_in_order_and_lateness_is_recorded() -> None:
    scheduler, loop, clock, sent, lateness = _scheduler()
    send = _send(sent)
    scheduler.schedule(0.050, send, "a", b"1")
    scheduler.schedule(0.050, send, "a", b"2")  # a tie keeps arrival order
    scheduler.schedule(0.020, send, "b", b"3")  # earlier: re-arms the timer
    assert sent == []
    [timer] = loop.live()
    assert timer.delay_s == pytest.approx(0.020)
    clock.now = 0.0205
    timer.fire()
    assert sent == ["b:3"]
    [timer] = loop.live()
    clock.now = 0.0502
    timer.fire()
    assert sent == ["b:3", "a:1", "a:2"]
    assert lateness == pytest.approx([0.0005, 0.0002, 0.0002])
    assert len(scheduler) == 0
    assert loop.live() == []


def test_an_early_wake_sends_nothing_and_waits_at_least_a_millisecond() -> None:
    scheduler, loop, clock, sent, _ = _scheduler()
    scheduler.schedule(0.010, _send(sent), "a", b"1")
    clock.now = 0.0098  # a millisecond-rounding loop fired early
    loop.live()[0].fire()
    assert sent == []
    [timer] = loop.live()
    assert timer.delay_s == pytest.approx(0.001)  # not 0.2 ms: that would spin
    clock.now = 0.0108
    timer.fire()
    assert sent == ["a:1"]


def test_close_forgets_what_is_waiting() -> None:
    scheduler, loop, _, sent, _ = _scheduler()
    scheduler.schedule(0.010, _send(sent), "a", b"1")
    scheduler.close()
    assert len(scheduler) == 0
    assert loop.live() == []
