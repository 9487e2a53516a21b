"""interop: every client the lab knows, against each relay policy, with a port rebind mid-call.

Each client that can run on this machine (lab.callers.drivers.DRIVERS; the
others are listed with the reason) makes one call through the path emulator
and the relay per ``--rebind`` policy; mid-call the emulator gives it a new
source port.  The matrix says, per client and policy: did it connect, how long
setup took (to DTLS connected), whether audio flowed each way, and how each
direction came back after the rebind.  A send-only client (a WHIP publisher)
is judged on its uplink alone.

Clients differ where the relay's design is tested: how often they send STUN
checks on a working path, and whether those checks nominate (USE-CANDIDATE),
which decides whether the media server moves its downlink to the new address
when the relay opens a new flow (``off``).
"""

from __future__ import annotations

from typing import Any

from lab.callers.drivers import DRIVERS, driver
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
LAB_CLIENT = "aiortc"
# A client in its own process (a browser, Node, FFmpeg) starts before it offers:
# ~1 s alone, up to ~4.5 s for three at once on 2 cores.  The rebind waits for it.
CLIENT_START_S = 4.0
# Rebind once the call has settled, then watch long enough to tell "back at the
# next consent check" (aioice: <= 6 s) from "never".
SETTLE_S = 3.0
WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
FAST_S = 1.0


def availability() -> dict[str, str | None]:
    """Every known client -> None if it can run here, else why not."""
    found: dict[str, str | None] = {}
    for name in DRIVERS:
        try:
            found[name] = driver(name).unavailable()
        except (ImportError, AttributeError) as exc:
            found[name] = f"driver not installed ({type(exc).__name__}: {exc})"
    return found


def _direction(name: str) -> str:
    return str(getattr(driver(name), "direction", "sendrecv"))


def _runs(quick: bool) -> tuple[Run, ...]:
    watch_s = WITHIN_CONSENT_S + 1.0 if quick else 20.0
    runs = []
    for name, reason in availability().items():
        if reason is not None:
            continue
        move_at = SETTLE_S + (0.0 if name == LAB_CLIENT else CLIENT_START_S)
        for policy in POLICIES:
            runs.append(
                Run(
                    label=f"{name}, rebind={policy}",
                    # Talk starts once connected, after the run began: at least
                    # watch_s of the call is left after the move.
                    calls=CallPlan(count=1, seconds=move_at + watch_s),
                    steps=(Step(move_at, Action.REBIND, {"mode": "port"}),),
                    stack={"media_servers": 1, "rebind": policy},
                    tags={"client": name, "rebind": policy, "direction": _direction(name)},
                    client=name,
                )
            )
    return tuple(runs)


# --- analysis -----------------------------------------------------------------------


def _cell(run: dict[str, Any]) -> tuple[dict[str, Any], Interruption | None]:
    """One client x policy: the numbers, and the interruption if there was a rebind."""
    (call,) = run["calls"]
    send_only = run["tags"].get("direction") == "sendonly"
    setup = call.get("setup_ms") or {}
    cell: dict[str, Any] = {
        "ok": call.get("ok"),
        "error": call.get("error"),
        "connected": setup.get("dtls_connected") is not None,
        "dtls_connected_ms": setup.get("dtls_connected"),
        "uplink_received": (call.get("uplink") or {}).get("packets_received"),
        "downlink_received": None
        if send_only
        else (call.get("downlink") or {}).get("packets_received"),
        "send_only": send_only,
    }
    event = step_time(run, "rebind")
    if event is None or not cell["connected"]:
        return cell, None
    found = interruption(call, event)
    cell["rebind"] = found.to_json()
    if send_only:
        cell["rebind"]["downlink"] = None
    return cell, found


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    clients: dict[str, dict[str, Any]] = {}
    found: dict[tuple[str, str], Interruption] = {}
    for run in data:
        name, policy = run["tags"]["client"], run["tags"]["rebind"]
        entry = clients.setdefault(
            name, {"available": True, "direction": run["tags"].get("direction"), "policies": {}}
        )
        cell, interrupted = _cell(run)
        entry["policies"][policy] = cell
        if interrupted is not None:
            found[(name, policy)] = interrupted
    for name, reason in availability().items():
        if name not in clients:
            clients[name] = {"available": False, "reason": reason or "not run", "policies": {}}

    rows: list[tuple[str, ...]] = []
    for name, entry in clients.items():
        if not entry["available"]:
            rows.append((name, "-", f"not available: {entry['reason']}", "-", "-", "-", "-"))
            continue
        for policy in POLICIES:
            cell = entry["policies"].get(policy)
            if cell is None:
                continue
            rows.append((name, policy, *_row(cell, found.get((name, policy)))))
    findings = [
        _connects(clients),
        _audio(clients),
        *(_off(name, found[(name, "off")], clients[name]) for name, p in found if p == "off"),
        _recovers(clients, found, "verified", WITHIN_CONSENT_S),
        _recovers(clients, found, "ssrc", FAST_S),
    ]
    table = (
        "Client x relay --rebind policy (a port rebind mid-call)",
        (
            "client",
            "--rebind",
            "connected (DTLS)",
            "audio down / up (packets)",
            "uplink after rebind",
            "downlink after rebind",
            "error",
        ),
        tuple(rows),
    )
    return Analysis(
        metrics={"clients": clients},
        findings=tuple(f for f in findings if f is not None),
        tables=(table,),
    )


def _row(cell: dict[str, Any], found: Interruption | None) -> tuple[str, ...]:
    connected = f"{cell['dtls_connected_ms']:.0f} ms" if cell["connected"] else "no"
    down = "n/a" if cell["send_only"] else _count(cell["downlink_received"])
    audio = f"{down} / {_count(cell['uplink_received'])}"
    if found is None:
        return connected, audio, "-", "-", cell["error"] or ""
    uplink = describe_recovery(found.uplink, found.event_s)
    downlink = (
        "n/a (send-only)" if cell["send_only"] else describe_recovery(found.downlink, found.event_s)
    )
    return connected, audio, uplink, downlink, cell["error"] or ""


def _count(value: object) -> str:
    return "-" if value is None else str(value)


def _cells(clients: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, policy, cell)
        for name, entry in clients.items()
        for policy, cell in entry["policies"].items()
    ]


def _connects(clients: dict[str, dict[str, Any]]) -> Finding | None:
    cells = _cells(clients)
    if not cells:
        return None
    failed = [f"{name}/{policy}" for name, policy, cell in cells if not cell["connected"]]
    return Finding(
        claim="Every client here connects through signaling and the one-port relay",
        expected="DTLS connected under every policy",
        observed=f"{len(cells) - len(failed)}/{len(cells)} calls connected"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        verdict=Verdict.CONFIRMED if not failed else Verdict.REFUTED,
        evidence=("metrics.clients.*.policies.*.connected",),
    )


def _audio(clients: dict[str, dict[str, Any]]) -> Finding | None:
    cells = [(n, p, c) for n, p, c in _cells(clients) if c["connected"]]
    if not cells:
        return None
    silent = [
        f"{name}/{policy}"
        for name, policy, cell in cells
        if not (cell["uplink_received"] or 0) > 0
        or (not cell["send_only"] and not (cell["downlink_received"] or 0) > 0)
    ]
    return Finding(
        claim="Audio flows both ways for every client (up only for a send-only client)",
        expected="packets received by the server and, unless send-only, by the client",
        observed=f"{len(cells) - len(silent)}/{len(cells)} connected calls carried audio"
        + (f"; silent: {', '.join(silent)}" if silent else ""),
        verdict=Verdict.CONFIRMED if not silent else Verdict.REFUTED,
        evidence=(
            "metrics.clients.*.policies.*.uplink_received",
            "metrics.clients.*.policies.*.downlink_received",
        ),
    )


def _off(name: str, found: Interruption, entry: dict[str, Any]) -> Finding | None:
    if entry["policies"]["off"]["send_only"]:
        return None
    lost = not found.downlink.recovered
    return Finding(
        claim=f"rebind=off (as published) loses the downlink of a moved {name} client",
        expected=(
            "downlink never back: the media server keeps sending to the old address, unless "
            "the client's checks re-nominate the new one"
        ),
        observed=(
            f"uplink {describe_recovery(found.uplink, found.event_s)}; "
            f"downlink {describe_recovery(found.downlink, found.event_s)}"
        ),
        verdict=Verdict.CONFIRMED if lost else Verdict.REFUTED,
        evidence=(f"metrics.clients.{name}.policies.off.rebind",),
    )


def _recovers(
    clients: dict[str, dict[str, Any]],
    found: dict[tuple[str, str], Interruption],
    policy: str,
    within_s: float,
) -> Finding | None:
    cells = {name: f for (name, p), f in found.items() if p == policy}
    if not cells:
        return None
    observed, slow = [], []
    for name, f in cells.items():
        directions = [("up", f.uplink)]
        if not clients[name]["policies"][policy]["send_only"]:
            directions.append(("down", f.downlink))
        parts = []
        for label, outage in directions:
            recovery = outage.recovery_s(f.event_s)
            parts.append(f"{label} {describe_recovery(outage, f.event_s)}")
            if recovery is None or recovery > within_s:
                slow.append(name)
        observed.append(f"{name}: {', '.join(parts)}")
    return Finding(
        claim=f"rebind={policy}: every client recovers after a rebind",
        expected=f"each direction back within {within_s:g} s",
        observed="; ".join(observed),
        verdict=Verdict.CONFIRMED if not slow else Verdict.REFUTED,
        evidence=(f"metrics.clients.*.policies.{policy}.rebind",),
    )


INTEROP = Scenario(
    name="interop",
    purpose="Every available client x relay --rebind policy: connect, audio, recovery.",
    description=(__doc__ or "").split("\n\n", 1)[1].replace("\n", " "),
    runs=_runs,
    analyse=_analyse,
    plots=("arrival", "setup"),
    # 15-20 s a run; one at a time is ~5 min for all six clients.  All 18 at once
    # would start every stack and browser together on 2 cores; three at a time
    # (about one client's three policies) takes ~2 min.
    parallel=True,
    max_parallel=3,
)
