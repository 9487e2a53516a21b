"""relay-restart, backend-crash, backend-drain: a part of the stack goes away."""

from __future__ import annotations

from typing import Any

from lab.scenarios.evidence import (
    CONSENT_INTERVAL_MAX_S,
    RECOVERY_MARGIN_S,
    call_end,
    describe_recovery,
    interruption,
    loss,
    max_gap_s,
    step_time,
)
from lab.scenarios.model import Action, Analysis, CallPlan, Finding, Run, Scenario, Step, Verdict

WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S


def _verdict(confirmed: bool, refuted: bool) -> Verdict:
    if confirmed:
        return Verdict.CONFIRMED
    return Verdict.REFUTED if refuted else Verdict.INCONCLUSIVE


# --- relay-restart ------------------------------------------------------------


def _relay_restart_runs(quick: bool) -> tuple[Run, ...]:
    plan = CallPlan(count=2, seconds=16.0) if quick else CallPlan(count=3, seconds=30.0)
    return (
        Run(
            label="relay SIGKILL + restart, in-memory table",
            calls=plan,
            steps=(
                Step(5.0, Action.KILL, {"part": "relay", "signal": "SIGKILL"}),
                Step(5.5, Action.RESTART, {"part": "relay"}),
            ),
            stack={"media_servers": 2},
        ),
    )


def _relay_restart_analyse(data: list[dict[str, Any]]) -> Analysis:
    (run,) = data
    killed, restarted = step_time(run, "kill"), step_time(run, "restart")
    per_call: list[dict[str, Any]] = []
    rows = []
    for index, call in enumerate(run["calls"]):
        if killed is None or restarted is None or not call["timeline"]["downlink_ms"]:
            per_call.append({"error": call.get("error") or "missing steps or audio"})
            continue
        found = interruption(call, killed)
        entry = found.to_json()
        # Recovery counted from the restart: the relay cannot forward before it exists.
        for direction in ("uplink", "downlink"):
            outage = getattr(found, direction)
            if outage.first_after_s is not None:
                entry[direction]["after_restart_s"] = round(outage.first_after_s - restarted, 3)
        per_call.append(entry)
        rows.append(
            (
                f"call {index + 1} (backend {call.get('backend')})",
                describe_recovery(found.uplink, restarted),
                describe_recovery(found.downlink, restarted),
                "not while observed"
                if found.server_closed_after_s is None
                else f"{found.server_closed_after_s:.1f} s after the kill",
            )
        )
    relay_downtime = None if killed is None or restarted is None else round(restarted - killed, 3)
    metrics = {"relay_down_s": relay_downtime, "calls": per_call}
    measured = [c for c in per_call if "uplink" in c]
    ups = [c["uplink"].get("after_restart_s") for c in measured]
    downs = [c["downlink"].get("after_restart_s") for c in measured]
    up_ok = bool(measured) and all(u is not None and u <= WITHIN_CONSENT_S for u in ups)
    down_ok = bool(measured) and all(d is not None and d <= WITHIN_CONSENT_S for d in downs)
    findings = (
        Finding(
            claim="After a relay restart the next STUN packet rebuilds the route (published)",
            expected=(
                "uplink back within one consent interval of the restart "
                f"(<= {WITHIN_CONSENT_S:g} s)"
            ),
            observed="uplink back after " + ", ".join(_s(u) for u in ups) + " from the restart",
            verdict=_verdict(up_ok, bool(measured) and not up_ok),
            evidence=("metrics.calls[*].uplink.after_restart_s",),
        ),
        Finding(
            claim="...and the call recovers in both directions",
            expected=(
                "downlink back within one consent interval of the restart "
                f"(<= {WITHIN_CONSENT_S:g} s)"
            ),
            observed=(
                "downlink " + ", ".join(_s(d) for d in downs) + " from the restart; the rebuilt "
                "flow has a new upstream socket, so the media server sees a new peer address"
            ),
            verdict=_verdict(down_ok, bool(measured) and not down_ok),
            evidence=("metrics.calls[*].downlink",),
        ),
    )
    table = (
        "Recovery per call, counted from the restart",
        ("call", "uplink", "downlink", "server gave up"),
        tuple(rows),
    )
    return Analysis(metrics=metrics, findings=findings, tables=(table,))


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


RELAY_RESTART = Scenario(
    name="relay-restart",
    purpose="The relay is SIGKILLed and restarted: per-call recovery with its table lost.",
    description=(
        "The relay keeps its flow table in memory. Killed and restarted on the same port, "
        "it knows no client until a STUN consent check names a session again; it then "
        "opens a new flow with a new upstream socket. Measured: when each direction's "
        "audio comes back, counted from the restart."
    ),
    runs=_relay_restart_runs,
    analyse=_relay_restart_analyse,
)


# --- backend-crash ------------------------------------------------------------


def _crash_runs(quick: bool) -> tuple[Run, ...]:
    seconds, later = (12.0, 4.0) if quick else (40.0, 6.0)
    return (
        Run(
            label="media-2 SIGKILL",
            calls=CallPlan(count=4, seconds=seconds),
            steps=(
                Step(4.0, Action.KILL, {"part": "media-2", "signal": "SIGKILL"}),
                Step(
                    7.0, Action.START_CALLS, {"count": 2, "seconds": later, "label": "after crash"}
                ),
            ),
            stack={"media_servers": 2},
        ),
    )


def _crash_analyse(data: list[dict[str, Any]]) -> Analysis:
    (run,) = data
    killed = step_time(run, "kill")
    before = [c for c in run["calls"] if c["label"] == "initial"]
    after = [c for c in run["calls"] if c["label"] != "initial"]
    victims = [c for c in before if c.get("backend") == 2]
    survivors = [c for c in before if c.get("backend") == 1]
    victim_info = []
    for call in victims:
        if killed is None:
            continue
        found = interruption(call, killed).to_json()
        found["observed_after_kill_s"] = round(call_end(call) - killed, 1)
        victim_info.append(found)
    survivor_loss = [loss(c, d) for c in survivors for d in ("uplink", "downlink")]
    survivor_gap = [max_gap_s(c, d) for c in survivors for d in ("uplink", "downlink")]
    metrics: dict[str, Any] = {
        "victims": victim_info,
        "survivors": len(survivors),
        "survivors_ok": sum(1 for c in survivors if c["ok"]),
        "survivors_max_loss": max((x for x in survivor_loss if x is not None), default=None),
        "survivors_max_gap_s": max((x for x in survivor_gap if x is not None), default=None),
        "new_calls": [{"ok": c["ok"], "backend": c.get("backend")} for c in after],
    }
    survivors_fine = (
        bool(survivors)
        and metrics["survivors_ok"] == len(survivors)
        and metrics["survivors_max_loss"] == 0
    )
    victims_silent = bool(victim_info) and all(not v["downlink"]["recovered"] for v in victim_info)
    new_ok = bool(after) and all(c["ok"] and c.get("backend") == 1 for c in after)
    findings = (
        Finding(
            claim="A dead media server costs its own sessions only",
            expected=(
                "calls on the other server: all ok, no loss; the dead server's calls go silent"
            ),
            observed=(
                f"{metrics['survivors_ok']}/{len(survivors)} other calls ok, largest loss "
                f"{metrics['survivors_max_loss']}, largest gap {metrics['survivors_max_gap_s']} s; "
                f"{sum(1 for v in victim_info if not v['downlink']['recovered'])}"
                f"/{len(victim_info)} "
                "of the dead server's calls silent to the end"
            ),
            verdict=_verdict(survivors_fine and victims_silent, not survivors_fine),
            evidence=("metrics.survivors_max_loss", "metrics.victims"),
        ),
        Finding(
            claim="A dead media server's callers are not told: only consent failure, if anything",
            expected=(
                f"no caller's connection leaves 'connected' within {UNTOLD_S:g} s of the crash"
            ),
            observed="; ".join(
                f"noticed after {v['caller_noticed_after_s']:.1f} s"
                if v["caller_noticed_after_s"] is not None
                else f"still 'connected' {v['observed_after_kill_s']:g} s after the crash"
                for v in victim_info
            ),
            verdict=_untold_verdict(victim_info),
            evidence=("metrics.victims[*].caller_noticed_after_s",),
        ),
        Finding(
            claim="New calls go to the surviving server",
            expected="every call placed after the crash is ok, on backend 1",
            observed=", ".join(
                f"{'ok' if c['ok'] else 'failed'} on {c['backend']}" for c in metrics["new_calls"]
            ),
            verdict=_verdict(new_ok, bool(after) and not new_ok),
            evidence=("metrics.new_calls",),
        ),
    )
    return Analysis(metrics=metrics, findings=findings)


# Consent checks every ~5 s, six failures: no ICE agent can know sooner than this.
UNTOLD_S = 25.0


def _untold_verdict(victims: list[dict[str, Any]]) -> Verdict:
    if not victims:
        return Verdict.INCONCLUSIVE
    noticed = [v["caller_noticed_after_s"] for v in victims]
    if any(n is not None and n < UNTOLD_S for n in noticed):
        return Verdict.REFUTED
    watched_long_enough = all(
        n is not None or v["observed_after_kill_s"] >= UNTOLD_S
        for n, v in zip(noticed, victims, strict=True)
    )
    return Verdict.CONFIRMED if watched_long_enough else Verdict.INCONCLUSIVE


BACKEND_CRASH = Scenario(
    name="backend-crash",
    purpose="One media server is SIGKILLed: only its calls are lost; who notices and when.",
    description=(
        "Four calls over two media servers; one server is killed without warning. "
        "Signaling's health polling takes it out of placement; its callers' audio stops "
        "but their ICE agents only find out when consent checks fail."
    ),
    runs=_crash_runs,
    analyse=_crash_analyse,
)


# --- backend-drain ------------------------------------------------------------


def _drain_runs(quick: bool) -> tuple[Run, ...]:
    seconds = 9.0 if quick else 16.0
    return (
        Run(
            label="media-2 drained",
            calls=CallPlan(count=4, seconds=seconds),
            steps=(
                Step(3.0, Action.DRAIN, {"media": 1}),
                Step(4.5, Action.START_CALLS, {"count": 4, "seconds": 4.0, "label": "after drain"}),
            ),
            stack={"media_servers": 2},
        ),
    )


def _drain_analyse(data: list[dict[str, Any]]) -> Analysis:
    (run,) = data
    before = [c for c in run["calls"] if c["label"] == "initial"]
    after = [c for c in run["calls"] if c["label"] != "initial"]
    on_drained = [c for c in before if c.get("backend") == 2]
    metrics: dict[str, Any] = {
        "on_drained_server": len(on_drained),
        "on_drained_ok": sum(1 for c in on_drained if c["ok"]),
        "on_drained_max_loss": max(
            (
                x
                for c in on_drained
                for d in ("uplink", "downlink")
                if (x := loss(c, d)) is not None
            ),
            default=None,
        ),
        "new_calls_backends": [c.get("backend") for c in after],
        "new_calls_ok": sum(1 for c in after if c["ok"]),
    }
    finished = bool(on_drained) and metrics["on_drained_ok"] == len(on_drained)
    avoided = bool(after) and all(b == 1 for b in metrics["new_calls_backends"])
    findings = (
        Finding(
            claim="A draining media server's calls finish normally",
            expected="every call already on it ends ok, without loss",
            observed=(
                f"{metrics['on_drained_ok']}/{len(on_drained)} ok, "
                f"largest loss {metrics['on_drained_max_loss']}"
            ),
            verdict=_verdict(finished and metrics["on_drained_max_loss"] == 0, not finished),
            evidence=("metrics.on_drained_ok", "metrics.on_drained_max_loss"),
        ),
        Finding(
            claim="No new call lands on a draining server",
            expected="every call placed after the drain is on backend 1",
            observed=f"backends {metrics['new_calls_backends']}, {metrics['new_calls_ok']} ok",
            verdict=_verdict(avoided and metrics["new_calls_ok"] == len(after), not avoided),
            evidence=("metrics.new_calls_backends",),
        ),
    )
    return Analysis(metrics=metrics, findings=findings)


BACKEND_DRAIN = Scenario(
    name="backend-drain",
    purpose="One media server drains: no new calls on it; its calls finish.",
    description=(
        "POST /drain on one media server mid-run: it refuses new sessions (503), "
        "signaling places new calls elsewhere, and the calls it holds carry on."
    ),
    runs=_drain_runs,
    analyse=_drain_analyse,
)
