"""The capacity scenario's analysis, on ramps whose numbers are known."""

from __future__ import annotations

from typing import Any

import pytest

from lab.scenarios.catalogue.scale import capacity_analyse
from lab.scenarios.model import Verdict

CORES = 2


def ramp(
    media_per_call: float,
    idle: float,
    ceiling: float,
    degrade_at: int | None,
    levels: int = 8,
    stalled: str = "media-1",
) -> dict[str, Any]:
    """A ramp of two calls every 4 s, CPU sampled every second.

    The media server asks for ``idle + media_per_call * calls`` cores and gets at most
    ``ceiling``; the callers get as much.  Tasks wait for a core for the share of time
    the demand of both exceeds the cores.
    At the level that degrades, the ``stalled`` process's event loop stood still for 240 ms.
    """
    cpu, log, used, waited = [], [], 0.0, 0.0
    t = 0
    for level in range(1, levels + 1):
        calls = 2 * level
        demand = idle + media_per_call * calls
        media = min(demand, ceiling)
        for _ in range(4):
            cpu.append(
                {
                    "t": float(t),
                    "media-1": used,
                    "callers": used,
                    "pressure": waited,
                    "cores": CORES,
                }
            )
            used += media
            waited += max(0.0, min(1.0, 2 * demand - CORES))
            t += 1
        degraded = degrade_at is not None and calls >= degrade_at
        log.append(
            {
                "t": float(t) - 0.5,
                "concurrent": calls,
                "sessions": calls,
                "worst_uplink_loss": 0.0,
                "worst_uplink_gap_ms": 250.0 if degraded else 40.0,
                "degraded": degraded,
                "loop_lag_max_ms": {"callers": 20.0, "relay": 5.0, "media-1": 30.0}
                | ({stalled: 240.0} if degraded else {}),
            }
        )
        if degraded:
            log.append({"stopped": "degraded", "t": float(t)})
            break
    else:
        log.append({"stopped": "cap", "t": float(t)})
    cpu.append(
        {"t": float(t), "media-1": used, "callers": used, "pressure": waited, "cores": CORES}
    )
    ok_calls = [{"ok": True}] * log[-2]["concurrent"]
    return {"snapshots": {"cpu": cpu}, "ramp": log, "calls": ok_calls}


def test_cost_per_session_is_the_slope_before_the_machine_saturates() -> None:
    analysis = capacity_analyse([ramp(0.05, 0.02, ceiling=0.95, degrade_at=16)])
    metrics = analysis.metrics
    assert metrics["media_core_per_session"] == pytest.approx(0.05, abs=0.002)
    assert metrics["sessions_per_core"] == pytest.approx(20, abs=1)
    # 2 * (0.02 + 0.05 * n) >= 0.85 * 2 cores from n = 18 on; the ramp degraded at 16 first.
    assert metrics["degraded_at"] == 16 and metrics["saturated_at"] is None
    cost, headroom = analysis.findings
    assert cost.verdict is Verdict.CONFIRMED
    # Degrading while the machine had cores to spare is exactly what the claim denies.
    assert headroom.verdict is Verdict.REFUTED
    assert metrics["levels"][-1]["stalled_loops"] == {"media-1": 240.0}
    assert "media-1 240 ms" in headroom.observed


def test_a_stall_of_the_callers_alone_says_nothing_about_the_server() -> None:
    analysis = capacity_analyse([ramp(0.05, 0.02, ceiling=0.95, degrade_at=8, stalled="callers")])
    assert analysis.metrics["levels"][-1]["stalled_loops"] == {"callers": 240.0}
    assert analysis.findings[1].verdict is Verdict.INCONCLUSIVE


def test_saturated_levels_do_not_bend_the_slope() -> None:
    analysis = capacity_analyse([ramp(0.04, 0.0, ceiling=0.95, degrade_at=None, levels=15)])
    metrics = analysis.metrics
    # 0.04 per call until the lab is 85% busy (2 * 0.04 * n >= 1.7 cores) at 22 calls; the
    # server is held at 0.95 core from 24 calls on, while 30 calls would want 1.2.
    assert metrics["saturated_at"] == 22
    pressure = [lvl["cpu_pressure"] for lvl in metrics["levels"]]
    assert pressure[:11] == [0.0] * 11 and pressure[-1] == pytest.approx(0.4)
    assert metrics["media_core_per_session"] == pytest.approx(0.04, abs=0.002)
    assert metrics["stopped"] == "cap" and metrics["degraded_at"] is None
    assert analysis.findings[1].verdict is Verdict.CONFIRMED


def test_a_cost_far_from_the_field_notes_is_refuted() -> None:
    analysis = capacity_analyse([ramp(0.2, 0.0, ceiling=1.0, degrade_at=None, levels=2)])
    assert analysis.findings[0].verdict is Verdict.REFUTED
