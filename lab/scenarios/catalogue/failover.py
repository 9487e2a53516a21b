"""relay-failover: two relay instances on one port; one dies.

The published relay runs many instances behind one address and keeps a Redis
copy of its flow table, so that a flow landing on an instance that never saw
it recovers before the next STUN packet.  Here two ``stun_lb`` processes share
the public port (SO_REUSEPORT); killing one makes the kernel hash its clients
onto the other.  With in-memory state the survivor knows none of them until a
consent check names the session (and then opens a new upstream socket, a new
peer to the media server); with Redis it finds the flow on the first packet
and binds the dead instance's upstream address, so the media server sees
nothing change.  A third run takes Redis away mid-call: known flows must keep
flowing.
"""

from __future__ import annotations

import shutil
from typing import Any

from lab.scenarios.evidence import (
    CONSENT_INTERVAL_MAX_S,
    RECOVERY_MARGIN_S,
    interruption,
    max_gap_s,
    step_time,
)
from lab.scenarios.model import Action, Analysis, CallPlan, Finding, Run, Scenario, Step, Verdict
from lab.scenarios.runner import BUSIEST_RELAY

WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
FAST_S = 0.5  # "first packet": audio frames flow every 20 ms


def _runs(quick: bool) -> tuple[Run, ...]:
    # Enough calls that the kernel's hash gives each instance some.
    plan = CallPlan(count=4 if quick else 6, seconds=14.0 if quick else 24.0, stagger_s=0.2)
    kill = (Step(5.0, Action.KILL, {"part": BUSIEST_RELAY, "signal": "SIGKILL"}),)
    runs = [
        Run(
            label="memory state, a relay killed",
            calls=plan,
            steps=kill,
            stack={"media_servers": 2, "relays": 2, "state": "memory"},
            tags={"state": "memory", "event": "relay"},
        )
    ]
    if shutil.which("redis-server"):
        runs += [
            Run(
                label="redis state, a relay killed",
                calls=plan,
                steps=kill,
                stack={"media_servers": 2, "relays": 2, "state": "redis"},
                tags={"state": "redis", "event": "relay"},
            ),
            Run(
                label="redis state, redis killed",
                calls=plan,
                steps=(Step(5.0, Action.KILL, {"part": "redis", "signal": "SIGKILL"}),),
                stack={"media_servers": 2, "relays": 2, "state": "redis"},
                tags={"state": "redis", "event": "redis"},
            ),
        ]
    return tuple(runs)


def _owner_before(run: dict[str, Any], event_s: float) -> dict[str, str]:
    """Upstream address -> relay instance, from the polls before the event.

    Keyed by the relay's upstream socket, which is the peer the media server
    nominated (``server_view.remote``): the caller's own address is hidden
    behind the path emulator's mapping.
    """
    owners: dict[str, str] = {}
    for snapshot in run["snapshots"]["relay"]:
        if snapshot["t"] < event_s:
            for flow in snapshot["flows"]:
                owners[flow["upstream"]] = snapshot["instance"]
    return owners


def _relay_run(run: dict[str, Any]) -> dict[str, Any]:
    killed = step_time(run, "kill")
    steps = [s for s in run["steps"] if s["action"] == "kill"]
    if killed is None or "outcome" not in steps[0]:
        return {"error": "no kill step"}
    victim = steps[0]["outcome"]["killed"]
    owners = _owner_before(run, killed)
    moved: list[dict[str, Any]] = []
    stayed: list[dict[str, Any]] = []
    for call in run["calls"]:
        owner = owners.get((call.get("server_view") or {}).get("remote") or "")
        if not call["timeline"]["downlink_ms"]:
            continue
        found = interruption(call, killed).to_json()
        found["instance"] = owner
        (moved if owner == victim else stayed).append(found)
    takeovers: dict[str, float] = {}
    for snapshot in run["snapshots"]["relay"]:
        if snapshot["instance"] != victim:
            takeovers = snapshot.get("takeovers", takeovers)
    return {
        "killed": victim,
        "moved": moved,
        "stayed": stayed,
        "takeovers": takeovers,
        "owners": owners,
    }


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    metrics: dict[str, Any] = {}
    rows = []
    for run in data:
        if run["tags"]["event"] == "relay":
            result = _relay_run(run)
            metrics[run["tags"]["state"]] = result
            for call in result.get("moved", []):
                rows.append(
                    (
                        run["label"],
                        f"{result['killed']} (killed)",
                        _rec(call["uplink"]),
                        _rec(call["downlink"]),
                    )
                )
            for call in result.get("stayed", []):
                rows.append(
                    (
                        run["label"],
                        call["instance"] or "?",
                        _rec(call["uplink"]),
                        _rec(call["downlink"]),
                    )
                )
        else:
            gaps = [max_gap_s(c, d) for c in run["calls"] for d in ("uplink", "downlink")]
            metrics["redis_outage"] = {
                "calls_ok": sum(1 for c in run["calls"] if c["ok"]),
                "calls": len(run["calls"]),
                "max_gap_s": max((g for g in gaps if g is not None), default=None),
            }
    findings = [
        f
        for f in (_memory_finding(metrics), _redis_finding(metrics), _outage_finding(metrics))
        if f
    ]
    table = (
        "Calls by the instance that carried them before the kill",
        ("run", "instance", "uplink", "downlink"),
        tuple(rows),
    )
    return Analysis(metrics=metrics, findings=tuple(findings), tables=(table,))


def _rec(direction: dict[str, Any]) -> str:
    if direction["recovery_s"] is None:
        return f"never (silent {direction['gap_s']:.1f} s)"
    if direction["gap_s"] == 0:
        return "not interrupted"
    return f"back after {direction['recovery_s']:.2f} s"


def _memory_finding(metrics: dict[str, Any]) -> Finding | None:
    memory = metrics.get("memory")
    if not memory or not memory.get("moved"):
        return None
    ups = [c["uplink"]["recovery_s"] for c in memory["moved"]]
    downs = [c["downlink"]["recovery_s"] for c in memory["moved"]]
    up_ok = all(u is not None and u <= WITHIN_CONSENT_S for u in ups)
    return Finding(
        claim="Without shared state a surviving instance waits for the next STUN packet",
        expected=(
            "moved calls: uplink back within one consent interval "
            f"(<= {WITHIN_CONSENT_S:g} s), downlink not before (and with aiortc media servers, "
            "never: a new upstream socket)"
        ),
        observed="uplink "
        + ", ".join(_s(u) for u in ups)
        + "; downlink "
        + ", ".join(_s(d) for d in downs),
        verdict=Verdict.CONFIRMED if up_ok else Verdict.REFUTED,
        evidence=("metrics.memory.moved",),
    )


def _redis_finding(metrics: dict[str, Any]) -> Finding | None:
    redis = metrics.get("redis")
    if not redis or not redis.get("moved"):
        return None
    # A direction that never came back counts as infinitely slow.
    worst = [
        max(_or_inf(c["uplink"]["recovery_s"]), _or_inf(c["downlink"]["recovery_s"]))
        for c in redis["moved"]
    ]
    fast = all(w <= FAST_S for w in worst)
    same = redis["takeovers"].get("same", 0)
    return Finding(
        claim="With the flow table in Redis a moved flow recovers on its first packet",
        expected=f"moved calls: both directions back within {FAST_S:g} s; the survivor reuses the "
        "dead instance's upstream address (the media server sees no change)",
        observed=", ".join(_s(None if w == float("inf") else w) for w in worst)
        + f"; takeovers with the same upstream address: {same:g}",
        verdict=Verdict.CONFIRMED if fast and same >= len(redis["moved"]) else Verdict.REFUTED,
        evidence=("metrics.redis.moved", "metrics.redis.takeovers"),
    )


def _outage_finding(metrics: dict[str, Any]) -> Finding | None:
    outage = metrics.get("redis_outage")
    if not outage:
        return None
    fine = outage["calls_ok"] == outage["calls"] and (outage["max_gap_s"] or 0) < 0.3
    return Finding(
        claim="A Redis outage does not touch flows the relays already know",
        expected="every call ok, no gap > 300 ms after Redis is killed",
        observed=f"{outage['calls_ok']}/{outage['calls']} ok, largest gap {outage['max_gap_s']} s",
        verdict=Verdict.CONFIRMED if fine else Verdict.REFUTED,
        evidence=("metrics.redis_outage",),
    )


def _or_inf(value: float | None) -> float:
    return float("inf") if value is None else value


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


RELAY_FAILOVER = Scenario(
    name="relay-failover",
    purpose="Two relay instances on one port, one killed: recovery with memory vs Redis state.",
    description=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
    runs=_runs,
    analyse=_analyse,
    plots=("arrival",),
)
