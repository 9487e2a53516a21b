"""The path model in virtual time: exact outcomes for a seed, loss statistics against theory."""

from __future__ import annotations

import itertools

import pytest

from lab.netem.core import (
    BurstLoss,
    Deliver,
    Direction,
    Drop,
    DropReason,
    Flow,
    LinkConfig,
    PathModel,
    Verdict,
)

UP = Direction.UP


def one_flow(**up: object) -> tuple[PathModel, Flow]:
    model = PathModel(seed=7, up=LinkConfig(**up))  # type: ignore[arg-type]
    return model, model.open_flow()


def arrives(at: float) -> Deliver:
    """A delivery at ``at``, compared within float rounding."""
    return Deliver(pytest.approx(at))  # type: ignore[arg-type]


def send(flow: Flow, times: list[float], size: int = 100) -> list[Verdict]:
    return [flow.offer(UP, size, t) for t in times]


def delivery_times(verdicts: list[Verdict]) -> list[float]:
    return [v.at for v in verdicts if isinstance(v, Deliver)]


def lost_indices(verdicts: list[Verdict]) -> list[int]:
    return [i for i, v in enumerate(verdicts) if isinstance(v, Drop)]


def runs_of_loss(verdicts: list[Verdict]) -> list[int]:
    return [
        len(list(group))
        for lost, group in itertools.groupby(isinstance(v, Drop) for v in verdicts)
        if lost
    ]


TICKS = [i * 0.02 for i in range(50)]  # one 20 ms audio packet per tick


# --- delay and jitter -------------------------------------------------------------


def test_a_clean_path_delivers_at_once() -> None:
    _, flow = one_flow()
    assert send(flow, [0.0, 0.5]) == [Deliver(0.0), Deliver(0.5)]


def test_delay_is_added_to_every_packet() -> None:
    _, flow = one_flow(delay_ms=50)
    assert delivery_times(send(flow, TICKS)) == pytest.approx([t + 0.05 for t in TICKS])


def test_directions_are_configured_separately() -> None:
    model = PathModel(seed=1, up=LinkConfig(delay_ms=10), down=LinkConfig(delay_ms=30))
    flow = model.open_flow()
    assert flow.offer(Direction.UP, 100, 1.0) == arrives(1.01)
    assert flow.offer(Direction.DOWN, 100, 1.0) == arrives(1.03)


def test_jitter_spreads_delays_but_never_reorders() -> None:
    _, flow = one_flow(delay_ms=50, jitter_ms=30)
    times = [i * 0.002 for i in range(500)]  # packets closer together than the jitter
    delivered = delivery_times(send(flow, times))
    assert delivered == sorted(delivered)
    delays = [at - t for at, t in zip(delivered, times, strict=True)]
    assert min(delays) >= 0.02 - 1e-12
    assert max(delays) <= 0.08 + 1e-12
    assert max(delays) - min(delays) > 0.03  # the jitter is really there


def test_jitter_reorders_only_when_asked() -> None:
    _, flow = one_flow(delay_ms=50, jitter_ms=30, reorder=True)
    times = [i * 0.002 for i in range(500)]
    delivered = delivery_times(send(flow, times))
    assert delivered != sorted(delivered)
    for at, t in zip(delivered, times, strict=True):
        assert 0.02 - 1e-12 <= at - t <= 0.08 + 1e-12  # uniform in delay ± jitter


def test_jitter_larger_than_delay_is_floored_at_zero() -> None:
    _, flow = one_flow(delay_ms=5, jitter_ms=20, reorder=True)
    for at, t in zip(delivery_times(send(flow, TICKS)), TICKS, strict=True):
        assert t <= at <= t + 0.025 + 1e-12


# --- determinism -------------------------------------------------------------------


def test_a_seed_fixes_every_outcome() -> None:
    def run(seed: int) -> list[Verdict]:
        config = LinkConfig(delay_ms=20, jitter_ms=10, loss=0.2, burst=BurstLoss(p=0.1, r=0.4))
        flow = PathModel(seed=seed, up=config).open_flow()
        return send(flow, TICKS)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_adding_jitter_does_not_change_which_packets_are_lost() -> None:
    _, plain = one_flow(loss=0.3)
    _, jittery = one_flow(loss=0.3, delay_ms=40, jitter_ms=20)
    assert lost_indices(send(plain, TICKS)) == lost_indices(send(jittery, TICKS))
    assert lost_indices(send(plain, TICKS))  # something was lost at all


def test_flows_have_their_own_randomness() -> None:
    model = PathModel(seed=7, up=LinkConfig(loss=0.3))
    first, second = model.open_flow(), model.open_flow()
    assert lost_indices(send(first, TICKS)) != lost_indices(send(second, TICKS))


# --- loss ------------------------------------------------------------------------------


def test_random_loss_rate_matches_its_setting() -> None:
    _, flow = one_flow(loss=0.1)
    verdicts = send(flow, [i * 0.001 for i in range(20_000)])
    lost = lost_indices(verdicts)
    assert 0.085 < len(lost) / len(verdicts) < 0.115
    assert {v.reason for v in verdicts if isinstance(v, Drop)} == {DropReason.LOSS}
    # Independent losses rarely come in runs: mean run length 1 / (1 - 0.1).
    runs = runs_of_loss(verdicts)
    assert sum(runs) / len(runs) < 1.3


def test_no_loss_and_full_loss_are_exact() -> None:
    _, clean = one_flow(loss=0.0)
    _, dead = one_flow(loss=1.0)
    assert lost_indices(send(clean, TICKS)) == []
    assert len(lost_indices(send(dead, TICKS))) == len(TICKS)


def test_burst_parameters_from_loss_and_mean_length() -> None:
    burst = BurstLoss.from_mean(0.05, 4)
    assert burst.r == 0.25
    assert burst.mean_loss == pytest.approx(0.05)
    assert BurstLoss.from_mean(0.0, 3).p == 0.0


def test_gilbert_elliott_loss_rate_and_burst_length_match_theory() -> None:
    _, flow = one_flow(burst=BurstLoss.from_mean(0.05, 4))
    verdicts = send(flow, [i * 0.001 for i in range(50_000)])
    lost = lost_indices(verdicts)
    assert 0.04 < len(lost) / len(verdicts) < 0.06  # p / (p + r) = 0.05
    runs = runs_of_loss(verdicts)
    assert 3.4 < sum(runs) / len(runs) < 4.6  # geometric, mean 1 / r = 4
    assert {v.reason for v in verdicts if isinstance(v, Drop)} == {DropReason.BURST}


def test_gilbert_elliott_with_lossy_states_matches_its_mean_loss() -> None:
    burst = BurstLoss(p=0.1, r=0.3, loss_good=0.01, loss_bad=0.5)
    assert burst.mean_loss == pytest.approx(0.75 * 0.01 + 0.25 * 0.5)
    _, flow = one_flow(burst=burst)
    verdicts = send(flow, [i * 0.001 for i in range(50_000)])
    assert abs(len(lost_indices(verdicts)) / len(verdicts) - burst.mean_loss) < 0.015


def test_each_flow_has_its_own_burst_chain() -> None:
    # Interleaving two calls on one chain would halve each call's bursts.
    model = PathModel(seed=2, up=LinkConfig(burst=BurstLoss.from_mean(0.1, 5)))
    flows = [model.open_flow(), model.open_flow()]
    verdicts: list[list[Verdict]] = [[], []]
    for i in range(40_000):
        verdicts[i % 2].append(flows[i % 2].offer(UP, 100, i * 0.001))
    for per_flow in verdicts:
        runs = runs_of_loss(per_flow)
        assert 4.0 < sum(runs) / len(runs) < 6.0


# --- rate limit and queue ---------------------------------------------------------------


def test_rate_limit_serializes_packets() -> None:
    # 80 kbit/s: a 100-byte packet takes 10 ms on the wire.
    _, flow = one_flow(rate_kbps=80, delay_ms=5)
    assert delivery_times(send(flow, [0.0] * 4)) == pytest.approx([0.015, 0.025, 0.035, 0.045])


def test_a_full_queue_drops_until_it_drains() -> None:
    _, flow = one_flow(rate_kbps=80, queue_limit_ms=25)
    verdicts = send(flow, [0.0] * 5 + [0.2])
    # Backlogs met: 0, 10, 20 ms accepted; 30 ms is over the limit.
    assert verdicts[:3] == [arrives(t) for t in (0.01, 0.02, 0.03)]
    assert verdicts[3:5] == [Drop(DropReason.QUEUE)] * 2
    assert verdicts[5] == arrives(0.21)  # drained by then


def test_a_big_packet_on_an_idle_link_is_never_queue_dropped() -> None:
    _, flow = one_flow(rate_kbps=8, queue_limit_ms=10)
    assert flow.offer(UP, 10_000, 0.0) == arrives(10.0)


def test_lost_packets_do_not_occupy_the_queue() -> None:
    model, flow = one_flow(rate_kbps=80, loss=1.0)
    send(flow, [0.0] * 10)
    model.configure(UP, LinkConfig(rate_kbps=80))  # the same flow, loss lifted
    assert flow.offer(UP, 100, 0.0) == arrives(0.01)


def test_rate_limits_are_per_flow() -> None:
    model = PathModel(seed=1, up=LinkConfig(rate_kbps=80))
    first, second = model.open_flow(), model.open_flow()
    send(first, [0.0] * 5)
    assert second.offer(UP, 100, 0.0) == arrives(0.01)


# --- blackhole and changes mid-stream ----------------------------------------------------


def test_blackhole_drops_everything_until_lifted() -> None:
    model, flow = one_flow(delay_ms=10)
    assert send(flow, [0.0]) == [arrives(0.01)]
    model.configure(UP, LinkConfig(delay_ms=10, blackhole=True))
    assert send(flow, [0.1, 0.2]) == [Drop(DropReason.BLACKHOLE)] * 2
    assert flow.offer(Direction.DOWN, 100, 0.2) == Deliver(0.2)  # the other way still works
    model.configure(UP, LinkConfig(delay_ms=10))
    assert send(flow, [0.3]) == [arrives(0.31)]
    counters = model.counters(UP)["udp"]
    assert counters.delivered == 2
    assert counters.dropped[DropReason.BLACKHOLE] == 2
    assert counters.as_dict()["offered"] == 4


def test_a_new_config_applies_to_later_packets_and_keeps_fifo_order() -> None:
    model, flow = one_flow(delay_ms=100)
    before = flow.offer(UP, 100, 0.99)
    model.configure(UP, LinkConfig(delay_ms=10))
    after = send(flow, [1.0, 1.05, 1.1])
    assert before == arrives(1.09)
    # The first packet after the change would overtake the one still in flight: it waits.
    assert delivery_times(after) == pytest.approx([1.09, 1.09, 1.11])


def test_switching_bursts_off_returns_the_chain_to_good() -> None:
    model, flow = one_flow(burst=BurstLoss(p=1.0, r=0.01))
    send(flow, TICKS[:3])  # now deep in the bad state
    model.configure(UP, LinkConfig())
    assert lost_indices(send(flow, TICKS[:3])) == []
    model.configure(UP, LinkConfig(burst=BurstLoss(p=0.0, r=0.5)))
    assert lost_indices(send(flow, TICKS)) == []  # starts good, never leaves


def test_counters_are_kept_per_flow_kind() -> None:
    model = PathModel(seed=1, up=LinkConfig(loss=1.0))
    model.open_flow("udp").offer(UP, 100, 0.0)
    model.open_flow("tcp").offer(UP, 100, 0.0)
    model.open_flow("tcp").offer(UP, 100, 0.0)
    assert model.counters(UP)["udp"].dropped[DropReason.LOSS] == 1
    assert model.counters(UP)["tcp"].dropped[DropReason.LOSS] == 2


def test_handshake_is_one_round_trip_of_fixed_delay() -> None:
    model = PathModel(up=LinkConfig(delay_ms=30, jitter_ms=10), down=LinkConfig(delay_ms=20))
    assert model.handshake_s() == pytest.approx(0.05)


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"delay_ms": -1},
        {"jitter_ms": float("nan")},
        {"loss": 1.5},
        {"rate_kbps": 0},
        {"queue_limit_ms": float("inf")},
    ],
)
def test_bad_link_configs_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: BurstLoss(p=0.1, r=0.0),
        lambda: BurstLoss(p=-0.1, r=0.5),
        lambda: BurstLoss(p=0.1, r=0.5, loss_bad=2.0),
        lambda: BurstLoss.from_mean(1.0, 3),
        lambda: BurstLoss.from_mean(0.1, 0.5),
    ],
)
def test_bad_burst_configs_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
