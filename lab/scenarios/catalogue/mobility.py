"""ip-change and nat-rebind: the caller's address changes mid-call, under each relay policy.

The relay keys flows by client address, as published.  A NAT rebinding (new
port) and a network change (new address) both look to it like a stranger
sending media, until the caller's next consent check (every ~5 s) names the
session again.  What happens then depends on ``--rebind``: ``off`` opens a new
flow with a new upstream socket, so the media server sees a new peer (and
aioice keeps sending to the old one); ``verified`` moves the session's flow
once the server answers the check; ``ssrc`` moves it on the first RTP packet
with a known SSRC.
"""

from __future__ import annotations

from typing import Any

from lab.callers.drivers import DRIVERS
from lab.scenarios.evidence import (
    CONSENT_INTERVAL_MAX_S,
    RECOVERY_MARGIN_S,
    Interruption,
    describe_recovery,
    interruption,
    step_time,
)
from lab.scenarios.model import Action, Analysis, CallPlan, Finding, Run, Scenario, Step, Verdict

POLICIES = ("off", "verified", "ssrc")
WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
# aioice gives up after 6 failed consent checks: about 30 s (field notes: 28-34 s).
SERVER_GIVES_UP_S = (24.0, 40.0)
# A client in a process of its own (a browser) starts before it offers: up to ~4.5 s
# with three browsers and three stacks on 2 cores.  The move waits that long too, so it
# lands in the same settled phase of the call as with the lab's caller.
CLIENT_START_S = 5.0


def _runs(mode: str, quick: bool, client: str = "aiortc") -> tuple[Run, ...]:
    # Full runs last long enough (> 35 s after the move) to see the server give up.
    seconds, move_at = (16.0, 5.0) if quick else (44.0, 6.0)
    suffix = ""
    if client != "aiortc":
        move_at += CLIENT_START_S
        suffix = f" ({client})"
    return tuple(
        Run(
            label=f"rebind={policy}{suffix}",
            calls=CallPlan(count=1, seconds=seconds),
            steps=(Step(move_at, Action.REBIND, {"mode": mode}),),
            stack={"media_servers": 1, "rebind": policy},
            tags={"rebind": policy},
            client=client,
        )
        for policy in POLICIES
    )


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    per_policy: dict[str, dict[str, Any]] = {}
    interruptions: dict[str, Interruption] = {}
    for run in data:
        policy = run["tags"]["rebind"]
        event = step_time(run, "rebind")
        (call,) = run["calls"]
        if event is None or not call.get("timeline", {}).get("downlink_ms"):
            per_policy[policy] = {"error": call.get("error") or "no rebind step or no audio"}
            continue
        found = interruption(call, event)
        interruptions[policy] = found
        per_policy[policy] = {
            **found.to_json(),
            "call_ok": call["ok"],
            "call_error": call.get("error"),
            "observed_after_event_s": round(call["timeline"]["end_ms"] / 1000 - event, 1),
        }
    metrics = {"policies": per_policy}
    rows = []
    for policy in POLICIES:
        m = per_policy.get(policy, {})
        if "uplink" not in m:
            rows.append((policy, "-", "-", "-", "-", m.get("error")))
            continue
        found = interruptions[policy]
        rows.append(
            (
                policy,
                describe_recovery(found.uplink, found.event_s),
                describe_recovery(found.downlink, found.event_s),
                _noticed(m["server_closed_after_s"], m["server_close_reason"]),
                _noticed(m["caller_noticed_after_s"], None),
                f"{m['observed_after_event_s']} s",
            )
        )
    findings = tuple(
        finding
        for finding in (
            _off(interruptions),
            _server_notices(per_policy),
            _verified(interruptions),
            _ssrc(interruptions),
        )
        if finding
    )
    table = (
        "After the move, per relay policy",
        (
            "--rebind",
            "uplink (server hears caller)",
            "downlink (caller hears server)",
            "server notices",
            "caller notices",
            "observed after move",
        ),
        tuple(rows),
    )
    return Analysis(metrics=metrics, findings=findings, tables=(table,))


def _noticed(after_s: float | None, reason: str | None) -> str:
    if after_s is None:
        return "not while observed"
    return f"after {after_s:.1f} s" + (f" ({reason})" if reason else "")


def _off(found: dict[str, Interruption]) -> Finding | None:
    f = found.get("off")
    if f is None:
        return None
    up = f.uplink.recovery_s(f.event_s)
    confirmed = up is not None and up <= WITHIN_CONSENT_S and not f.downlink.recovered
    refuted = f.downlink.recovered
    return Finding(
        claim="A relay that parses only STUN loses a moved client (rebind=off, as published)",
        expected=(
            f"uplink back at the next consent check (<= {WITHIN_CONSENT_S:g} s); downlink "
            "never: the media server keeps sending to the old address"
        ),
        observed=(
            f"uplink {describe_recovery(f.uplink, f.event_s)}; "
            f"downlink {describe_recovery(f.downlink, f.event_s)}"
        ),
        verdict=_verdict(confirmed, refuted),
        evidence=("metrics.policies.off.uplink", "metrics.policies.off.downlink"),
    )


def _server_notices(per_policy: dict[str, dict[str, Any]]) -> Finding | None:
    m = per_policy.get("off")
    if not m or "uplink" not in m:
        return None
    closed = m["server_closed_after_s"]
    observed_for = m["observed_after_event_s"]
    low, high = SERVER_GIVES_UP_S
    if closed is None:
        observed = f"server still holding the session {observed_for} s after the move"
        verdict = Verdict.INCONCLUSIVE if observed_for < high else Verdict.REFUTED
    else:
        observed = (
            f"server closed the session {closed:.1f} s after the move ({m['server_close_reason']})"
        )
        verdict = Verdict.CONFIRMED if low <= closed <= high else Verdict.REFUTED
    caller = m["caller_noticed_after_s"]
    observed += "; the caller's ICE " + (
        "never left 'connected'" if caller is None else f"gave up after {caller:.1f} s"
    )
    return Finding(
        claim="Only consent failure tells the server its client is gone",
        expected=f"server closes {low:g}-{high:g} s after the move; the caller hears silence",
        observed=observed,
        verdict=verdict,
        evidence=("metrics.policies.off.server_closed_after_s",),
    )


def _verified(found: dict[str, Interruption]) -> Finding | None:
    f = found.get("verified")
    if f is None:
        return None
    up, down = f.uplink.recovery_s(f.event_s), f.downlink.recovery_s(f.event_s)
    confirmed = up is not None and down is not None and max(up, down) <= WITHIN_CONSENT_S
    return Finding(
        claim="Moving the session's flow on the server's STUN answer recovers both directions",
        expected=f"both directions back within one consent interval (<= {WITHIN_CONSENT_S:g} s)",
        observed=(
            f"uplink {describe_recovery(f.uplink, f.event_s)}; "
            f"downlink {describe_recovery(f.downlink, f.event_s)}"
        ),
        verdict=_verdict(confirmed, down is None),
        evidence=("metrics.policies.verified.uplink", "metrics.policies.verified.downlink"),
    )


def _ssrc(found: dict[str, Interruption]) -> Finding | None:
    f = found.get("ssrc")
    if f is None:
        return None
    up, down = f.uplink.recovery_s(f.event_s), f.downlink.recovery_s(f.event_s)
    fast = 1.0
    confirmed = up is not None and down is not None and max(up, down) <= fast
    return Finding(
        claim="Moving on a known RTP SSRC recovers at the first packet (unauthenticated)",
        expected=f"both directions back within {fast:g} s",
        observed=(
            f"uplink {describe_recovery(f.uplink, f.event_s)}; "
            f"downlink {describe_recovery(f.downlink, f.event_s)}"
        ),
        verdict=_verdict(confirmed, down is None),
        evidence=("metrics.policies.ssrc.uplink", "metrics.policies.ssrc.downlink"),
    )


def _verdict(confirmed: bool, refuted: bool) -> Verdict:
    if confirmed:
        return Verdict.CONFIRMED
    return Verdict.REFUTED if refuted else Verdict.INCONCLUSIVE


def ip_change(client: str = "aiortc") -> Scenario:
    return Scenario(
        name=_named("ip-change", client),
        purpose="The caller's IP address changes mid-call, under each --rebind policy.",
        description=(
            f"One call per relay policy{_by(client)}; mid-call the path emulator moves the "
            "caller to a new source address in 127.0.0.0/8 (a phone leaving Wi-Fi for "
            "cellular). Old address: gone. "
            + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ")
        ),
        runs=lambda quick: _runs("address", quick, client),
        analyse=_analyse,
        parallel=True,
    )


def nat_rebind(client: str = "aiortc") -> Scenario:
    return Scenario(
        name=_named("nat-rebind", client),
        purpose="The caller's NAT gives it a new source port mid-call, under each --rebind policy.",
        description=(
            f"One call per relay policy{_by(client)}; mid-call the path emulator moves the "
            "caller's mapping to a new source port on the same address (a NAT that expired and "
            "re-created the mapping). " + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ")
        ),
        runs=lambda quick: _runs("port", quick, client),
        analyse=_analyse,
        parallel=True,
    )


def _named(name: str, client: str) -> str:
    # Another client's runs are another scenario's report, beside the lab caller's.
    return name if client == "aiortc" else f"{name}-{client}"


def _by(client: str) -> str:
    return "" if client == "aiortc" else f", the caller a {client} client"


IP_CHANGE = ip_change()
NAT_REBIND = nat_rebind()
# The scenarios a caller other than the lab's own can run (`scenario run --client`).
BY_CLIENT = {"ip-change": ip_change, "nat-rebind": nat_rebind}


def with_client(scenario: Scenario, client: str) -> Scenario:
    """``scenario`` with ``client`` (a name in lab.callers.drivers.DRIVERS) as the caller."""
    if client not in DRIVERS:
        raise ValueError(f"no client {client!r}; known: {', '.join(DRIVERS)}")
    if client == "aiortc":
        return scenario
    if scenario.name not in BY_CLIENT:
        raise ValueError(
            f"scenario {scenario.name!r} runs only the lab's own caller; "
            f"--client works with {', '.join(BY_CLIENT)}"
        )
    return BY_CLIENT[scenario.name](client)
