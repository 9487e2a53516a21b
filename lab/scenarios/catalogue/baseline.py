"""baseline: several clean calls, the reference every other scenario is read against."""

from __future__ import annotations

from typing import Any

from lab.report.analysis import mean
from lab.scenarios.evidence import loss, max_gap_s
from lab.scenarios.model import Analysis, CallPlan, Finding, Run, Scenario, Verdict


def runs(quick: bool) -> tuple[Run, ...]:
    plan = CallPlan(count=2, seconds=6.0) if quick else CallPlan(count=4, seconds=12.0)
    return (Run(label="clean path", calls=plan),)


def analyse(data: list[dict[str, Any]]) -> Analysis:
    (run,) = data
    calls = run["calls"]
    ok = [call for call in calls if call["ok"]]
    losses = [loss(call, d) for call in calls for d in ("uplink", "downlink")]
    gaps = [max_gap_s(call, d) for call in calls for d in ("uplink", "downlink")]
    latencies = [
        t["latency_ms"] for call in calls for t in call.get("turns", []) if t["latency_ms"]
    ]
    first_audio = [call["setup_ms"].get("first_audio_in") for call in ok]
    metrics: dict[str, Any] = {
        "calls": len(calls),
        "calls_ok": len(ok),
        "max_loss_ratio": max((x for x in losses if x is not None), default=None),
        "max_gap_s": max((x for x in gaps if x is not None), default=None),
        "mean_first_audio_ms": mean([x for x in first_audio if x is not None]),
        "mean_turn_latency_ms": mean(latencies),
        "turns": len(latencies),
    }
    clean = metrics["calls_ok"] == len(calls) and metrics["max_loss_ratio"] == 0
    findings = (
        Finding(
            claim="On a clean path the relay adds no loss",
            expected="every call ok; 0 frames lost in either direction",
            observed=(
                f"{len(ok)}/{len(calls)} calls ok; largest loss ratio "
                f"{metrics['max_loss_ratio']}; largest gap {metrics['max_gap_s']} s"
            ),
            verdict=Verdict.CONFIRMED if clean else Verdict.REFUTED,
            evidence=("metrics.calls_ok", "metrics.max_loss_ratio", "runs[0].calls[*].uplink"),
        ),
        Finding(
            claim="The agent answers every utterance (VAD hangover + model delay + pacing)",
            expected="at least one measured turn per call",
            observed=f"{metrics['turns']} turns, mean latency {metrics['mean_turn_latency_ms']} ms",
            verdict=Verdict.CONFIRMED if metrics["turns"] >= len(calls) else Verdict.REFUTED,
            evidence=("metrics.mean_turn_latency_ms", "runs[0].calls[*].turns"),
        ),
    )
    return Analysis(metrics=metrics, findings=findings)


BASELINE = Scenario(
    name="baseline",
    purpose="Several clean calls through emulator and relay: the reference for the rest.",
    description=(
        "Calls cross the path emulator (no impairment) and the relay to two media "
        "servers. Zero loss and steady turn latency here mean any loss elsewhere comes "
        "from the scenario's event, not the lab."
    ),
    runs=runs,
    analyse=analyse,
    show_calls=True,
)
