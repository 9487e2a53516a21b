"""interop: every client the lab knows, against each relay policy, with a port rebind mid-call.

Each client that can run on this machine (lab.callers.drivers.DRIVERS; the
others are listed with the reason) calls through the path emulator and the
relay under each ``--rebind`` policy; mid-call the emulator gives each call a
new source port.  Each client and policy rests on several moves (8; 1 in the
quick set) at seeded, stratified phases of the call, the same phases for every
client and policy (lab/scenarios/moves.py: one call per move, the calls of a
stack moved together).  The matrix says, per client and policy: did every call
connect, how long setup took (to DTLS connected), whether audio flowed each
way, and the silence each direction heard after the rebind (median, 95th
percentile, maximum).  A send-only client (a WHIP publisher) is judged on its
uplink alone.

Clients differ where the relay's design is tested: how often they send STUN
checks on a working path, and whether those checks nominate (USE-CANDIDATE),
which decides whether the media server moves its downlink to the new address
when the relay opens a new flow (``off``).
"""

from __future__ import annotations

from statistics import median
from typing import Any

from lab.callers.drivers import DRIVERS, driver
from lab.report.analysis import Spread
from lab.report.text import describe_spread
from lab.scenarios.evidence import (
    CONSENT_INTERVAL_MAX_S,
    KEEPALIVE_HEADER,
    KEEPALIVE_TITLE,
    RECOVERY_MARGIN_S,
    Move,
    gap_spread,
    keepalive_row,
    keepalives,
    moves_of,
)
from lab.scenarios.model import Analysis, Finding, Run, Scenario, Verdict
from lab.scenarios.moves import (
    DEFAULT_SEED,
    FULL_MOVES,
    MovePlan,
    calls_per_run,
    moving_runs,
    quick_note,
)

POLICIES = ("off", "verified", "ssrc")
LAB_CLIENT = "aiortc"
WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
FAST_S = 1.0
# Moves per client and policy in the quick set: one, at a seeded phase, for seven
# clients x three policies in a few minutes (CI runs it); the full run makes 8.
QUICK_MOVES = 1
# After the move: long enough to tell "back at the next consent check" (aioice: <= 6 s)
# from "never"; a full run watches off longer (a client whose checks re-nominate).
WATCH_QUICK_S = WITHIN_CONSENT_S + 1.0
WATCH_FULL_S = {"off": 20.0, "verified": WITHIN_CONSENT_S + 3.0, "ssrc": WITHIN_CONSENT_S + 3.0}


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


def _runs(quick: bool, seed: int) -> tuple[Run, ...]:
    moves = QUICK_MOVES if quick else FULL_MOVES
    runs: list[Run] = []
    for name, reason in availability().items():
        if reason is not None:
            continue
        plan = MovePlan(moves, min(moves, calls_per_run(name)), seed)
        for policy in POLICIES:
            runs += moving_runs(
                plan,
                label=f"{name}, rebind={policy}",
                client=name,
                mode="port",
                watch_s=WATCH_QUICK_S if quick else WATCH_FULL_S[policy],
                stack={"media_servers": 1, "rebind": policy},
                tags={
                    "client": name,
                    "rebind": policy,
                    "direction": _direction(name),
                    "seed": seed,
                    "moves": moves,
                    "quick": quick,
                },
            )
    return tuple(runs)


# --- analysis -----------------------------------------------------------------------


def _calls_of(run: dict[str, Any], send_only: bool) -> list[dict[str, Any]]:
    """What each call of a run showed: connected, setup time, audio each way."""
    out = []
    for call in run["calls"]:
        setup = call.get("setup_ms") or {}
        down = (call.get("downlink") or {}).get("packets_received")
        out.append(
            {
                "label": call.get("label"),
                "error": call.get("error"),
                "connected": setup.get("dtls_connected") is not None,
                "dtls_connected_ms": setup.get("dtls_connected"),
                "uplink_received": (call.get("uplink") or {}).get("packets_received"),
                "downlink_received": None if send_only else down,
            }
        )
    return out


def _cell(calls: list[dict[str, Any]], moves: list[Move], send_only: bool) -> dict[str, Any]:
    """One client x policy over all its calls: the numbers the matrix and verdicts read."""
    connected = [c for c in calls if c["connected"]]
    setups = [c["dtls_connected_ms"] for c in connected]

    def least(key: str) -> int | None:
        values = [c[key] for c in connected]
        if not values or any(v is None for v in values):
            return None
        return min(values)

    errors = [f"{c['label']}: {c['error']}" for c in calls if c["error"]]
    cell: dict[str, Any] = {
        "calls": len(calls),
        "connected_calls": len(connected),
        "connected": bool(calls) and len(connected) == len(calls),
        "dtls_connected_ms": round(median(setups), 1) if setups else None,
        # The quietest call's count: one silent call makes the cell silent.
        "uplink_received": least("uplink_received"),
        "downlink_received": None if send_only else least("downlink_received"),
        "send_only": send_only,
        "error": errors[0] if errors else None,
        "errors": errors,
        "calls_seen": calls,
    }
    if moves:
        cell["rebind"] = {
            "moves": len(moves),
            "uplink": gap_spread(moves, "uplink").to_json(),
            "downlink": None if send_only else gap_spread(moves, "downlink").to_json(),
            "each": [move.to_json() for move in moves],
        }
    return cell


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    clients: dict[str, dict[str, Any]] = {}
    gathered: dict[tuple[str, str], tuple[list[dict[str, Any]], list[Move]]] = {}
    planned, quick = 0, False
    for run in data:
        tags = run["tags"]
        name, policy = tags["client"], tags["rebind"]
        planned, quick = int(tags.get("moves", 1)), bool(tags.get("quick"))
        send_only = tags.get("direction") == "sendonly"
        clients.setdefault(
            name, {"available": True, "direction": tags.get("direction"), "policies": {}}
        )
        calls, moves = gathered.setdefault((name, policy), ([], []))
        calls += _calls_of(run, send_only)
        moves += [m for m in moves_of(run)[0] if _connected(run, m.label)]
    by_client: dict[str, list[dict[str, Any]]] = {}
    for run in data:
        by_client.setdefault(run["tags"]["client"], []).append(run)
    stun_rows = []
    for name, runs in by_client.items():
        seen = keepalives(runs)
        by_policy = {
            policy: keepalives([r for r in runs if r["tags"]["rebind"] == policy])
            for policy in POLICIES
        }
        clients[name]["keepalive"] = None if seen is None else seen.to_json()
        clients[name]["keepalive_by_policy"] = {
            policy: None if found is None else found.to_json()
            for policy, found in by_policy.items()
        }
        if seen is not None:
            stun_rows.append(keepalive_row(name, seen, by_policy))
    found: dict[tuple[str, str], list[Move]] = {}
    for (name, policy), (calls, moves) in gathered.items():
        send_only = clients[name]["direction"] == "sendonly"
        clients[name]["policies"][policy] = _cell(calls, moves, send_only)
        if moves:
            found[(name, policy)] = moves
    for name, reason in availability().items():
        if name not in clients:
            clients[name] = {"available": False, "reason": reason or "not run", "policies": {}}

    rows: list[tuple[str, ...]] = []
    groups = []
    for name, entry in clients.items():
        if not entry["available"]:
            rows.append((name, "-", f"not available: {entry['reason']}", "-", "-", "-", "-"))
            continue
        for policy in POLICIES:
            cell = entry["policies"].get(policy)
            if cell is None:
                continue
            moves = found.get((name, policy), [])
            rows.append((name, policy, *_row(cell, moves)))
            if moves:
                groups.append(
                    {
                        "label": f"{name}, {policy}",
                        "uplink": cell["rebind"]["uplink"]["values"],
                        "downlink": None
                        if cell["send_only"]
                        else cell["rebind"]["downlink"]["values"],
                    }
                )
    findings = [
        _connects(clients),
        _audio(clients),
        *(_off(name, moves, clients[name]) for (name, p), moves in found.items() if p == "off"),
        _recovers(clients, found, "verified", WITHIN_CONSENT_S),
        _recovers(clients, found, "ssrc", FAST_S),
        *(_silent(name, clients[name], found) for name in clients),
    ]
    table = (
        "Client x relay --rebind policy, a port rebind mid-call: "
        + quick_note(planned, quick).replace("each", "per client and policy"),
        (
            "client",
            "--rebind",
            "connected (DTLS, median)",
            "audio down / up (packets, quietest call)",
            "uplink gap after rebind",
            "downlink gap after rebind",
            "error",
        ),
        tuple(rows),
    )
    stun_table = (KEEPALIVE_TITLE, KEEPALIVE_HEADER, tuple(stun_rows))
    return Analysis(
        metrics={
            "seed": data[0]["tags"].get("seed") if data else None,
            "moves_planned": planned,
            "quick": quick,
            "clients": clients,
            "recovery": {"groups": groups},
        },
        findings=tuple(f for f in findings if f is not None),
        tables=(table, stun_table) if stun_rows else (table,),
    )


def _connected(run: dict[str, Any], label: str) -> bool:
    for call in run["calls"]:
        if call.get("label") == label:
            return (call.get("setup_ms") or {}).get("dtls_connected") is not None
    return False


def _silent(
    name: str, entry: dict[str, Any], found: dict[tuple[str, str], list[Move]]
) -> Finding | None:
    """A client that sends no Binding request after a move cannot be found again by STUN."""
    seen = entry.get("keepalive")
    firsts = (seen or {}).get("first_request_after_move_s") or {}
    if not firsts.get("trials") or firsts.get("ended"):
        return None  # it did check again (or was not watched): the other verdicts apply
    waiting = [found.get((name, policy), []) for policy in ("off", "verified")]
    ups = [gap_spread(moves, "uplink") for moves in waiting if moves]
    if not ups:
        return None
    back = sum(up.ended for up in ups)
    return Finding(
        claim=(
            f"A {name} client sends no Binding request after a move: a relay that learns "
            "addresses only from STUN checks (off, verified) never finds it again"
        ),
        expected="uplink never back under off and verified (only ssrc's RTP move helps)",
        observed=f"no request from {firsts['trials']} moved callers; uplink back on {back} of "
        f"{sum(up.trials for up in ups)} moves under off and verified",
        verdict=Verdict.CONFIRMED if back == 0 else Verdict.REFUTED,
        evidence=(
            f"metrics.clients.{name}.keepalive.first_request_after_move_s",
            f"metrics.clients.{name}.policies.off.rebind.uplink",
            f"metrics.clients.{name}.policies.verified.rebind.uplink",
        ),
    )


def _row(cell: dict[str, Any], moves: list[Move]) -> tuple[str, ...]:
    if cell["connected_calls"] == 0:
        connected = "no"
    else:
        connected = f"{cell['dtls_connected_ms']:.0f} ms"
        if not cell["connected"]:
            connected += f" ({cell['connected_calls']}/{cell['calls']} calls)"
    down = "n/a" if cell["send_only"] else _count(cell["downlink_received"])
    audio = f"{down} / {_count(cell['uplink_received'])}"
    error = "; ".join(cell["errors"])
    if not moves:
        return connected, audio, "-", "-", error
    uplink = describe_spread(gap_spread(moves, "uplink"))
    downlink = (
        "n/a (send-only)" if cell["send_only"] else describe_spread(gap_spread(moves, "downlink"))
    )
    return connected, audio, uplink, downlink, error


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
    calls = sum(cell["calls"] for _, _, cell in cells)
    connected = sum(cell["connected_calls"] for _, _, cell in cells)
    failed = [f"{name}/{policy}" for name, policy, cell in cells if not cell["connected"]]
    return Finding(
        claim="Every client here connects through signaling and the one-port relay",
        expected="DTLS connected on every call under every policy",
        observed=f"{connected}/{calls} calls connected"
        + (f"; failed in: {', '.join(failed)}" if failed else ""),
        verdict=Verdict.CONFIRMED if not failed else Verdict.REFUTED,
        evidence=("metrics.clients.*.policies.*.connected",),
    )


def _audio(clients: dict[str, dict[str, Any]]) -> Finding | None:
    cells = [(n, p, c) for n, p, c in _cells(clients) if c["connected_calls"]]
    if not cells:
        return None
    silent = []
    for name, policy, cell in cells:
        for call in cell["calls_seen"]:
            if not call["connected"]:
                continue
            up = (call["uplink_received"] or 0) > 0
            down = cell["send_only"] or (call["downlink_received"] or 0) > 0
            if not (up and down):
                silent.append(f"{name}/{policy}/{call['label']}")
    total = sum(c["connected_calls"] for _, _, c in cells)
    return Finding(
        claim="Audio flows both ways for every client (up only for a send-only client)",
        expected="packets received by the server and, unless send-only, by the client",
        observed=f"{total - len(silent)}/{total} connected calls carried audio"
        + (f"; silent: {', '.join(silent)}" if silent else ""),
        verdict=Verdict.CONFIRMED if not silent else Verdict.REFUTED,
        evidence=(
            "metrics.clients.*.policies.*.uplink_received",
            "metrics.clients.*.policies.*.downlink_received",
        ),
    )


def _off(name: str, moves: list[Move], entry: dict[str, Any]) -> Finding | None:
    if entry["policies"]["off"]["send_only"]:
        return None
    down = gap_spread(moves, "downlink")
    if down.ended == 0:
        verdict = Verdict.CONFIRMED
    elif down.ended == down.trials:
        verdict = Verdict.REFUTED
    else:  # lost on some moves, back on others: the phase decides
        verdict = Verdict.INCONCLUSIVE
    return Finding(
        claim=f"rebind=off (as published) loses the downlink of a moved {name} client",
        expected=(
            "downlink never back after any move: the media server keeps sending to the old "
            "address, unless the client's checks re-nominate the new one"
        ),
        observed=(
            f"uplink {describe_spread(gap_spread(moves, 'uplink'))}; "
            f"downlink {describe_spread(down)}"
        ),
        verdict=verdict,
        evidence=(f"metrics.clients.{name}.policies.off.rebind",),
    )


def _recovers(
    clients: dict[str, dict[str, Any]],
    found: dict[tuple[str, str], list[Move]],
    policy: str,
    within_s: float,
) -> Finding | None:
    cells = {name: moves for (name, p), moves in found.items() if p == policy}
    if not cells:
        return None
    observed, slow = [], []
    for name, moves in cells.items():
        directions = ["uplink"]
        if not clients[name]["policies"][policy]["send_only"]:
            directions.append("downlink")
        parts = []
        for direction in directions:
            spread: Spread = gap_spread(moves, direction)
            parts.append(f"{direction[:-4]} {describe_spread(spread)}")
            if spread.max is None or spread.max > within_s:
                slow.append(name)
        observed.append(f"{name}: {', '.join(parts)}")
    return Finding(
        claim=f"rebind={policy}: every client recovers after a rebind",
        expected=f"each direction back within {within_s:g} s on every move",
        observed="; ".join(observed),
        verdict=Verdict.CONFIRMED if not slow else Verdict.REFUTED,
        evidence=(f"metrics.clients.*.policies.{policy}.rebind",),
    )


def interop(seed: int = DEFAULT_SEED) -> Scenario:
    return Scenario(
        name="interop",
        purpose="Every available client x relay --rebind policy: connect, audio, recovery.",
        description=" ".join(p.replace("\n", " ") for p in (__doc__ or "").split("\n\n")[1:]),
        runs=lambda quick: _runs(quick, seed),
        analyse=_analyse,
        plots=("recovery", "arrival", "setup"),
        # 20-30 s a run, two to four runs per client and policy.  All at once would
        # start every stack and browser together on 2 cores; three at a time (about one
        # client's three policies) keeps each run's audio clean.
        parallel=True,
        max_parallel=3,
        seed=seed,
    )


INTEROP = interop()
