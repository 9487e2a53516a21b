"""ip-change and nat-rebind: the caller's address changes mid-call, under each relay policy.

The relay keys flows by client address, as published.  A NAT rebinding (new
port) and a network change (new address) both look to it like a stranger
sending media, until the caller's next consent check (every ~5 s) names the
session again.  What happens then depends on ``--rebind``: ``off`` opens a new
flow with a new upstream socket, so the media server sees a new peer (and
aioice keeps sending to the old one); ``verified`` moves the session's flow
once the server answers the check; ``ssrc`` moves it on the first RTP packet
with a known SSRC.

Each figure rests on many moves at random phases of the caller's consent
schedule (lab/scenarios/moves.py): each move is a fresh call moved once, the
calls of one stack start at stratified, seeded offsets over one consent
interval and are moved together, and every policy sees the same phases.
"""

from __future__ import annotations

from typing import Any

from lab.callers.drivers import DRIVERS, driver
from lab.report.analysis import Spread
from lab.report.text import describe_spread, seconds
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
WITHIN_CONSENT_S = CONSENT_INTERVAL_MAX_S + RECOVERY_MARGIN_S
# aioice gives up after 6 failed consent checks: about 30 s (field notes: 28-34 s).
SERVER_GIVES_UP_S = (24.0, 40.0)
QUICK_MOVES = 4
# After the move: long enough, under off, to see the server give up (outside --quick);
# the policies that recover only need to see the recovery.
WATCH_QUICK_S = 11.0
WATCH_FULL_S = {"off": 38.0, "verified": WITHIN_CONSENT_S + 2.0, "ssrc": WITHIN_CONSENT_S + 2.0}
# Gaps that spread over at least this much show that the phase of the move decides
# the figure (a quarter of aioice's longest consent interval).
PHASE_MATTERS_S = 1.5


def move_plan(quick: bool, client: str, seed: int) -> MovePlan:
    return MovePlan(QUICK_MOVES if quick else FULL_MOVES, calls_per_run(client), seed)


def _runs(mode: str, quick: bool, client: str, seed: int) -> tuple[Run, ...]:
    plan = move_plan(quick, client, seed)
    suffix = "" if client == "aiortc" else f" ({client})"
    runs: list[Run] = []
    for policy in POLICIES:
        runs += moving_runs(
            plan,
            label=f"rebind={policy}{suffix}",
            client=client,
            mode=mode,
            watch_s=WATCH_QUICK_S if quick else WATCH_FULL_S[policy],
            stack={"media_servers": 1, "rebind": policy},
            tags={"rebind": policy, "seed": seed, "moves": plan.moves, "quick": quick},
        )
    return tuple(runs)


# --- analysis -----------------------------------------------------------------------


def _analyse(data: list[dict[str, Any]]) -> Analysis:
    moves: dict[str, list[Move]] = {policy: [] for policy in POLICIES}
    errors: dict[str, list[str]] = {policy: [] for policy in POLICIES}
    observed_after: dict[str, list[float]] = {policy: [] for policy in POLICIES}
    for run in data:
        policy = run["tags"]["rebind"]
        found, problems = moves_of(run)
        moves[policy] += found
        errors[policy] += problems
        observed_after[policy] += [m.interruption.observed_after_s for m in found]
    first = data[0]["tags"] if data else {}
    planned, quick = int(first.get("moves", 0)), bool(first.get("quick"))
    per_policy = {
        policy: _policy_metrics(moves[policy], errors[policy], observed_after[policy])
        for policy in POLICIES
    }
    metrics = {
        "seed": first.get("seed"),
        "moves_planned": planned,
        "quick": quick,
        "policies": per_policy,
        "recovery": {
            "groups": [
                {
                    "label": f"rebind={policy}",
                    "uplink": per_policy[policy]["uplink"]["values"],
                    "downlink": per_policy[policy]["downlink"]["values"],
                }
                for policy in POLICIES
            ]
        },
    }
    rows = []
    for policy in POLICIES:
        m, found = per_policy[policy], moves[policy]
        if not found:
            rows.append((policy, 0, "-", "-", "-", "-", "-", "; ".join(errors[policy]) or "-"))
            continue
        rows.append(
            (
                policy,
                len(found),
                describe_spread(gap_spread(found, "uplink")),
                describe_spread(gap_spread(found, "downlink")),
                _noticed(_server_closed(found)),
                _noticed(_caller_noticed(found)),
                _phases(m["after_connect_s"]),
                f"{seconds(m['observed_after_move_s'])}"
                + (f"; {'; '.join(errors[policy])}" if errors[policy] else ""),
            )
        )
    findings = tuple(
        finding
        for finding in (
            _off(moves["off"]),
            _phase_matters(moves),
            _server_notices(moves["off"], per_policy["off"]),
            _verified(moves["verified"]),
            _ssrc(moves["ssrc"]),
        )
        if finding
    )
    table = (
        f"Silence around the move, per relay policy: {quick_note(planned, quick)}",
        (
            "--rebind",
            "moves",
            "uplink gap (server hears caller)",
            "downlink gap (caller hears server)",
            "server notices",
            "caller notices",
            "move fell after connect",
            "observed after move (shortest)",
        ),
        tuple(rows),
    )
    tables: list[tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]]] = [table]
    seen = keepalives(data)
    if seen is not None:
        by_policy = {
            policy: keepalives([run for run in data if run["tags"]["rebind"] == policy])
            for policy in POLICIES
        }
        client = str(data[0].get("config", {}).get("client") or "aiortc")
        metrics["keepalive"] = seen.to_json()
        tables.append(
            (KEEPALIVE_TITLE, KEEPALIVE_HEADER, (keepalive_row(client, seen, by_policy),))
        )
    return Analysis(metrics=metrics, findings=findings, tables=tuple(tables))


def _policy_metrics(
    moves: list[Move], errors: list[str], observed_after: list[float]
) -> dict[str, Any]:
    phases = [m.after_connect_s for m in moves if m.after_connect_s is not None]
    return {
        "moves": len(moves),
        "uplink": gap_spread(moves, "uplink").to_json(),
        "downlink": gap_spread(moves, "downlink").to_json(),
        "server_closed_after_s": _server_closed(moves).to_json(),
        "caller_noticed_after_s": _caller_noticed(moves).to_json(),
        "after_connect_s": [round(min(phases), 2), round(max(phases), 2)] if phases else None,
        "observed_after_move_s": round(min(observed_after), 1) if observed_after else None,
        "errors": errors,
        "each": [move.to_json() for move in moves],
    }


def _server_closed(moves: list[Move]) -> Spread:
    return Spread(tuple(m.interruption.server_closed_after_s for m in moves))


def _caller_noticed(moves: list[Move]) -> Spread:
    return Spread(tuple(m.interruption.caller_noticed_after_s for m in moves))


def _noticed(spread: Spread) -> str:
    return describe_spread(spread, never="not while observed")


def _phases(span: list[float] | None) -> str:
    return "-" if span is None else f"{seconds(span[0])} to {seconds(span[1])}"


def _both(moves: list[Move]) -> str:
    return (
        f"uplink {describe_spread(gap_spread(moves, 'uplink'))}; "
        f"downlink {describe_spread(gap_spread(moves, 'downlink'))}"
    )


def _within(spread: Spread, limit_s: float) -> bool:
    """Every trial ended, the slowest within ``limit_s``."""
    return spread.trials > 0 and spread.max is not None and spread.max <= limit_s


def _off(moves: list[Move]) -> Finding | None:
    if not moves:
        return None
    up, down = gap_spread(moves, "uplink"), gap_spread(moves, "downlink")
    confirmed = _within(up, WITHIN_CONSENT_S) and down.ended == 0
    return Finding(
        claim="A relay that parses only STUN loses a moved client (rebind=off, as published)",
        expected=(
            f"on every move: uplink back at the next consent check (<= {WITHIN_CONSENT_S:g} s); "
            "downlink never: the media server keeps sending to the old address"
        ),
        observed=_both(moves),
        verdict=_verdict(confirmed, refuted=down.ended > 0),
        evidence=("metrics.policies.off.uplink", "metrics.policies.off.downlink"),
    )


def _phase_matters(moves: dict[str, list[Move]]) -> Finding | None:
    # Under off and verified the uplink waits for the caller's next check.
    waiting = [m for policy in ("off", "verified") for m in moves[policy]]
    gaps = [gap for gap in gap_spread(waiting, "uplink").values if gap is not None]
    if len(gaps) < 2:
        return None
    spread = max(gaps) - min(gaps)
    return Finding(
        claim="One move is an anecdote: the uplink's recovery depends on the move's phase",
        expected=(
            "under off and verified, the uplink gaps of moves at phases spread over a consent "
            f"interval differ by >= {PHASE_MATTERS_S:g} s (each waits for the caller's next check)"
        ),
        observed=(
            f"{len(gaps)} moves: uplink gaps from {seconds(min(gaps))} to {seconds(max(gaps))}"
        ),
        verdict=Verdict.CONFIRMED if spread >= PHASE_MATTERS_S else Verdict.REFUTED,
        evidence=("metrics.policies.off.uplink.values", "metrics.policies.verified.uplink.values"),
    )


def _server_notices(moves: list[Move], metrics: dict[str, Any]) -> Finding | None:
    if not moves:
        return None
    closed = _server_closed(moves)
    observed_for = metrics["observed_after_move_s"] or 0.0
    low, high = SERVER_GIVES_UP_S
    in_range = [v for v in closed.values if v is not None and low <= v <= high]
    out_of_range = [v for v in closed.values if v is not None and not low <= v <= high]
    if out_of_range:
        verdict = Verdict.REFUTED
    elif len(in_range) == closed.trials:
        verdict = Verdict.CONFIRMED
    else:  # some sessions still held: refuted only if watched past the longest give-up
        verdict = Verdict.INCONCLUSIVE if observed_for < high else Verdict.REFUTED
    callers = _caller_noticed(moves)
    observed = f"server closed the session: {_noticed(closed)}; the caller's ICE " + (
        "never left 'connected'" if callers.ended == 0 else f"gave up: {_noticed(callers)}"
    )
    return Finding(
        claim="Only consent failure tells the server its client is gone",
        expected=(
            f"server closes {low:g}-{high:g} s after every move; the caller hears silence "
            f"(watched {seconds(observed_for)} after the move)"
        ),
        observed=observed,
        verdict=verdict,
        evidence=("metrics.policies.off.server_closed_after_s",),
    )


def _verified(moves: list[Move]) -> Finding | None:
    if not moves:
        return None
    up, down = gap_spread(moves, "uplink"), gap_spread(moves, "downlink")
    return Finding(
        claim="Moving the session's flow on the server's STUN answer recovers both directions",
        expected=(
            f"on every move, both directions back within one consent interval "
            f"(<= {WITHIN_CONSENT_S:g} s)"
        ),
        observed=_both(moves),
        verdict=_verdict(
            _within(up, WITHIN_CONSENT_S) and _within(down, WITHIN_CONSENT_S),
            refuted=up.ended < up.trials or down.ended < down.trials,
        ),
        evidence=("metrics.policies.verified.uplink", "metrics.policies.verified.downlink"),
    )


def _ssrc(moves: list[Move]) -> Finding | None:
    if not moves:
        return None
    up, down = gap_spread(moves, "uplink"), gap_spread(moves, "downlink")
    fast = 1.0
    return Finding(
        claim="Moving on a known RTP SSRC recovers at the first packet (unauthenticated)",
        expected=f"on every move, both directions back within {fast:g} s",
        observed=_both(moves),
        verdict=_verdict(
            _within(up, fast) and _within(down, fast),
            refuted=up.ended < up.trials or down.ended < down.trials,
        ),
        evidence=("metrics.policies.ssrc.uplink", "metrics.policies.ssrc.downlink"),
    )


def _verdict(confirmed: bool, refuted: bool) -> Verdict:
    if confirmed:
        return Verdict.CONFIRMED
    return Verdict.REFUTED if refuted else Verdict.INCONCLUSIVE


def ip_change(client: str = "aiortc", seed: int = DEFAULT_SEED) -> Scenario:
    return Scenario(
        name=_named("ip-change", client),
        purpose="The caller's IP address changes mid-call, under each --rebind policy.",
        description=(
            f"{FULL_MOVES} moves per relay policy ({QUICK_MOVES} in the quick set){_by(client)}: "
            "mid-call the path emulator moves each caller to a new source address in "
            "127.0.0.0/8 (a phone leaving Wi-Fi for cellular). Old address: gone. "
            + _doc_paragraphs()
        ),
        runs=lambda quick: _runs("address", quick, client, seed),
        analyse=_analyse,
        plots=("recovery", "arrival", "gaps", "setup"),
        parallel=True,
        max_parallel=3,
        seed=seed,
    )


def nat_rebind(client: str = "aiortc", seed: int = DEFAULT_SEED) -> Scenario:
    return Scenario(
        name=_named("nat-rebind", client),
        purpose="The caller's NAT gives it a new source port mid-call, under each --rebind policy.",
        description=(
            f"{FULL_MOVES} moves per relay policy ({QUICK_MOVES} in the quick set){_by(client)}: "
            "mid-call the path emulator moves each caller's mapping to a new source port on the "
            "same address (a NAT that expired and re-created the mapping). " + _doc_paragraphs()
        ),
        runs=lambda quick: _runs("port", quick, client, seed),
        analyse=_analyse,
        plots=("recovery", "arrival", "gaps", "setup"),
        parallel=True,
        max_parallel=3,
        seed=seed,
    )


def _doc_paragraphs() -> str:
    return " ".join(p.replace("\n", " ") for p in (__doc__ or "").split("\n\n")[1:])


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
    if getattr(driver(client), "direction", "sendrecv") != "sendrecv":
        # Its verdicts judge both directions; interop judges a send-only client's uplink.
        raise ValueError(f"{client} only sends: its moves are judged in `scenario run interop`")
    return BY_CLIENT[scenario.name](client, scenario.seed or DEFAULT_SEED)
