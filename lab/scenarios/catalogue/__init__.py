"""The scenario catalogue: every scenario `rtclab scenario list` shows."""

from __future__ import annotations

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
