"""Read a run's data (as stored in results.json) into the quantities findings use.

Everything is on the run's clock (seconds since the run started).  These are
the only accessors the catalogue uses, so the meaning of "the downlink came
back" or "the server noticed" is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.report.analysis import Outage, Spread, gaps, outage_around
from lab.report.text import describe_spread, seconds

FRAME_S = 0.02
# aioice sends a consent check every 5 s x U(0.8, 1.2): a recovery that waits
# for the next check lands within 6 s of the event; margin for scheduling.
CONSENT_INTERVAL_MAX_S = 6.0
RECOVERY_MARGIN_S = 1.5


def downlink_arrivals(call: dict[str, Any]) -> list[float]:
    """When the caller heard each downlink frame."""
    return [ms / 1000 for ms in call["timeline"]["downlink_ms"]]


def uplink_arrivals(call: dict[str, Any]) -> list[float]:
    """When the server heard the caller's frames, rebuilt every 20 ms from its stretches."""
    arrivals: list[float] = []
    for start_ms, end_ms in call["timeline"]["uplink_segments_ms"]:
        t = start_ms / 1000
        while t <= end_ms / 1000 + 1e-9:
            arrivals.append(round(t, 4))
            t += FRAME_S
    return arrivals


def call_end(call: dict[str, Any]) -> float:
    return float(call["timeline"]["end_ms"]) / 1000


def step_time(run: dict[str, Any], action: str, nth: int = 0) -> float | None:
    """When the ``nth`` step of ``action`` was done (None if the run had none)."""
    times = [step["done_at_s"] for step in run["steps"] if step["action"] == action]
    return float(times[nth]) if len(times) > nth else None


@dataclass(frozen=True, slots=True)
class Interruption:
    """What one event did to one call, both directions, and who noticed."""

    uplink: Outage
    downlink: Outage
    event_s: float
    server_closed_after_s: float | None  # server gave up on the session
    server_close_reason: str | None
    caller_noticed_after_s: float | None  # caller's connection left "connected"

    @property
    def observed_after_s(self) -> float:
        """How long after the event the call was watched (its end)."""
        return self.downlink.observed_until_s - self.event_s

    def to_json(self) -> dict[str, Any]:
        def direction(outage: Outage) -> dict[str, Any]:
            recovery = outage.recovery_s(self.event_s)
            return {
                "recovered": outage.recovered,
                "recovery_s": None if recovery is None else round(recovery, 3),
                "gap_s": round(outage.gap_s, 3),
            }

        return {
            "event_s": round(self.event_s, 3),
            "uplink": direction(self.uplink),
            "downlink": direction(self.downlink),
            "server_closed_after_s": _round(self.server_closed_after_s),
            "server_close_reason": self.server_close_reason,
            "caller_noticed_after_s": _round(self.caller_noticed_after_s),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def interruption(call: dict[str, Any], event_s: float) -> Interruption:
    until = call_end(call)
    timeline = call["timeline"]
    closed_ms = timeline.get("server_closed_ms")
    # The server may close at hang-up; only a close before the caller hung up is "noticed".
    server_closed = None
    if closed_ms is not None and closed_ms / 1000 < until - 0.5:
        server_closed = closed_ms / 1000 - event_s
    caller_noticed = None
    for at_ms, kind, state in timeline.get("states", []):
        # The caller's own hang-up also ends in "closed"; only an earlier change counts.
        noticed = event_s < at_ms / 1000 < until - 0.5
        if kind == "connection" and state in ("failed", "closed") and noticed:
            caller_noticed = at_ms / 1000 - event_s
            break
    uplink_until = until if server_closed is None else event_s + server_closed
    return Interruption(
        uplink=outage_around(uplink_arrivals(call), event_s, uplink_until),
        downlink=outage_around(downlink_arrivals(call), event_s, until),
        event_s=event_s,
        server_closed_after_s=server_closed,
        server_close_reason=timeline.get("server_close_reason") if server_closed else None,
        caller_noticed_after_s=caller_noticed,
    )


@dataclass(frozen=True, slots=True)
class Move:
    """One call moved once (lab/scenarios/moves.py): what the move did, and when it fell."""

    label: str
    interruption: Interruption
    # The move's phase: seconds after the call's DTLS connected (None: never connected).
    after_connect_s: float | None

    def gap_s(self, direction: str) -> float | None:
        """The silence heard around the move in ``direction``; None: never back."""
        outage: Outage = getattr(self.interruption, direction)
        return outage.gap_s if outage.recovered else None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "after_connect_s": _round(self.after_connect_s),
            **self.interruption.to_json(),
        }


def moves_of(run: dict[str, Any], action: str = "rebind") -> tuple[list[Move], list[str]]:
    """Every call of ``run`` as a move at its (only) ``action`` step, and why others are not.

    A call that never carried downlink audio, or a run whose step failed, is no
    move: it is returned as an error line instead, so a report can say so.
    """
    event = step_time(run, action)
    errors = [str(step["error"]) for step in run["steps"] if "error" in step]
    if event is None:
        return [], errors or [f"no {action} step"]
    found = []
    for call in run["calls"]:
        label = str(call.get("label"))
        timeline = call.get("timeline") or {}
        if not timeline.get("downlink_ms") and not timeline.get("uplink_segments_ms"):
            errors.append(f"{label}: {call.get('error') or 'no audio'}")
            continue
        connected_ms = (call.get("setup_ms") or {}).get("dtls_connected")
        after_connect = None
        if connected_ms is not None:
            after_connect = event - (float(call.get("start_s") or 0.0) + connected_ms / 1000)
            if after_connect < 0:  # a client slow to start: it was never moved
                errors.append(f"{label}: connected {-after_connect:.1f} s after the move")
                continue
        found.append(Move(label, interruption(call, event), after_connect))
    return found, errors


def gap_spread(moves: list[Move], direction: str) -> Spread:
    """The gaps ``moves`` caused in ``direction`` (``uplink``/``downlink``), never-backs as None."""
    return Spread(tuple(move.gap_s(direction) for move in moves))


def describe_recovery(outage: Outage, event_s: float) -> str:
    recovery = outage.recovery_s(event_s)
    if recovery is None:
        return f"never (silent {outage.gap_s:.1f} s to the end)"
    if outage.gap_s == 0:
        return "not interrupted"
    return f"back after {recovery:.1f} s"


def loss(call: dict[str, Any], direction: str) -> float | None:
    stats = call.get(direction) or {}
    value = stats.get("loss_ratio")
    return None if value is None else float(value)


def max_gap_s(call: dict[str, Any], direction: str) -> float | None:
    value = (call.get(direction) or {}).get("max_gap_ms")
    return None if value is None else float(value) / 1000


# --- what each caller's ICE agent sent (the path's STUN record, runner.py "stun") ---------

# The connectivity checks of setup come in a burst; keepalives are what follows.
SETUP_BURST_S = 2.0


@dataclass(frozen=True, slots=True)
class Keepalives:
    """How callers kept their ICE path alive, and what they sent after a move, pooled."""

    callers: int
    request_intervals_s: tuple[float, ...]  # between a caller's Binding requests, once set up
    requests: int  # Binding requests once set up, over the whole call
    nominating: int  # of those, with USE-CANDIDATE
    indication_intervals_s: tuple[float, ...]
    indications: int
    first_request_after_s: tuple[float | None, ...]  # per caller: its first request after
    answered_after: int  # callers that answered a server check after the move
    observed_s: float  # the longest a caller was watched once set up

    def to_json(self) -> dict[str, Any]:
        return {
            "callers": self.callers,
            "requests": self.requests,
            "nominating": self.nominating,
            "request_interval_s": Spread(self.request_intervals_s).to_json(),
            "indications": self.indications,
            "indication_interval_s": Spread(self.indication_intervals_s).to_json(),
            "first_request_after_move_s": Spread(self.first_request_after_s).to_json(),
            "answered_after_move": self.answered_after,
            "observed_s": round(self.observed_s, 1),
        }


def keepalives(runs: list[dict[str, Any]], action: str = "rebind") -> Keepalives | None:
    """What the callers of ``runs`` sent, from each run's STUN record (None: none kept).

    Only what a caller's agent chose to send counts towards its keepalives: Binding
    requests and indications from it once its setup burst is over, over the whole
    call (a keepalive schedule is the client's, whatever the path does).
    """
    intervals: list[float] = []
    indication_intervals: list[float] = []
    requests = nominating = indications = answered = callers = 0
    observed = 0.0
    first_after: list[float | None] = []
    for run in runs:
        record = run.get("stun") or {}
        event = step_time(run, action)
        for entries in (record.get("callers") or {}).values():
            up = [e for e in entries if e[1] == "up" and e[3] == 1 and e[0] is not None]
            if not up:
                continue
            callers += 1
            settled = up[0][0] + SETUP_BURST_S
            kept = [e for e in up if e[0] >= settled]
            observed = max(observed, entries[-1][0] - settled)
            checks = [e for e in kept if e[2] == "request"]
            pings = [e for e in kept if e[2] == "indication"]
            requests += len(checks)
            nominating += sum(bool(e[4]) for e in checks)
            indications += len(pings)
            intervals += gaps([e[0] for e in checks])
            indication_intervals += gaps([e[0] for e in pings])
            if event is None or up[0][0] > event:
                continue  # not moved: it began after the move
            after = [e for e in up if e[0] >= event]
            first_after.append(next((e[0] - event for e in after if e[2] == "request"), None))
            answered += any(e[2] == "success" for e in after)
    if not callers:
        return None
    return Keepalives(
        callers=callers,
        request_intervals_s=tuple(round(v, 3) for v in intervals),
        requests=requests,
        nominating=nominating,
        indication_intervals_s=tuple(round(v, 3) for v in indication_intervals),
        indications=indications,
        first_request_after_s=tuple(first_after),
        answered_after=answered,
        observed_s=observed,
    )


KEEPALIVE_TITLE = (
    "What each client's ICE agent sent through the path (the emulator's STUN record, "
    "every call once its setup was over)"
)
KEEPALIVE_HEADER = (
    "client",
    "Binding requests: interval",
    "with USE-CANDIDATE",
    "Binding indications: interval",
    "first request after the move",
    "callers that answered the server's checks after the move (off / verified / ssrc)",
)


def keepalive_row(
    name: str, seen: Keepalives, by_policy: dict[str, Keepalives | None]
) -> tuple[str, ...]:
    """One row under :data:`KEEPALIVE_HEADER` (``by_policy``: the same, per relay policy)."""

    def interval(values: tuple[float, ...], count: int) -> str:
        if not count:
            return f"none in {seconds(seen.observed_s)}"
        return f"{count}, median {seconds(Spread(values).median)}" if values else f"{count}"

    answered = " / ".join(
        "-" if found is None else f"{found.answered_after}/{found.callers}"
        for found in by_policy.values()
    )
    return (
        name,
        interval(seen.request_intervals_s, seen.requests),
        f"{seen.nominating}/{seen.requests}" if seen.requests else "-",
        interval(seen.indication_intervals_s, seen.indications),
        describe_spread(Spread(seen.first_request_after_s), trial="caller"),
        answered,
    )
