"""The scenario catalogue: every scenario `rtclab scenario list` shows."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lab.scenarios.catalogue import (
    baseline,
    failover,
    failures,
    impairment,
    interop,
    mobility,
    scale,
    tts,
)
from lab.scenarios.model import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    baseline.BASELINE,
    mobility.IP_CHANGE,
    mobility.NAT_REBIND,
    failures.RELAY_RESTART,
    failover.RELAY_FAILOVER,
    failures.BACKEND_CRASH,
    failures.BACKEND_DRAIN,
    impairment.LOSS,
    impairment.SETUP_RTT,
    tts.TTS_BURST,
    scale.CAPACITY,
    scale.PORT_FOOTPRINT,
    interop.INTEROP,
)

CATALOGUE: dict[str, Scenario] = {scenario.name: scenario for scenario in SCENARIOS}


def choose(names: Iterable[str]) -> list[Scenario]:
    """The scenarios named (``all``: the whole catalogue, in its order); ValueError if unknown."""
    names = list(names)
    chosen = list(SCENARIOS) if "all" in names else []
    for name in names:
        if name == "all":
            continue
        if name not in CATALOGUE:
            raise ValueError(f"no scenario {name!r}; see `rtclab scenario list`")
        chosen.append(CATALOGUE[name])
    return chosen


# The scenarios whose runs are drawn at random (the phases of their moves), by name:
# `scenario run --seed` rebuilds them with another seed.
SEEDED: dict[str, Callable[[int], Scenario]] = {
    "ip-change": lambda seed: mobility.ip_change(seed=seed),
    "nat-rebind": lambda seed: mobility.nat_rebind(seed=seed),
    "interop": lambda seed: interop.interop(seed),
}


def with_seed(scenario: Scenario, seed: int) -> Scenario:
    """``scenario`` drawing its random phases from ``seed`` (unchanged if it draws none)."""
    rebuild = SEEDED.get(scenario.name)
    return scenario if rebuild is None else rebuild(seed)
