"""capacity and port-footprint: what one media server carries, and what the world sees."""

from __future__ import annotations

from typing import Any

from lab.report.analysis import linear_fit
from lab.scenarios.model import Action, Analysis, CallPlan, Finding, Run, Scenario, Step, Verdict

# --- capacity ------------------------------------------------------------------

LATE_GAP_S = 0.2  # a 200 ms stall is a late frame anyone hears
MAX_LOSS = 0.01
# Field notes: ~4 % of a core per bidirectional Opus session (20 sessions, aiortc 1.16).
FIELD_NOTES_CORE_PER_SESSION = 0.04


def _capacity_runs(quick: bool) -> tuple[Run, ...]:
    ramp = (
        {"per_step": 2, "every_s": 4.0, "max_calls": 6, "hold_s": 3.0}
        if quick
        else {"per_step": 2, "every_s": 5.0, "max_calls": 40, "hold_s": 4.0}
    )
    limits = {"max_loss": MAX_LOSS, "max_gap_ms": LATE_GAP_S * 1000}
    return (
        Run(
            label="ramp on one media server",
            calls=CallPlan(count=0, seconds=0.0),
            steps=(Step(0.0, Action.RAMP, {**ramp, **limits}),),
            stack={"media_servers": 1},
            netem=False,  # the emulator's own CPU would compete with what is measured
            poll_interval_s=1.0,
        ),
    )


# The lab's processes keeping this share of the cores busy is a full machine: the
# kernel's loopback packet work is charged to no process and takes the rest.  In
# every run on 2 cores the media server's CPU stopped growing with its calls here.
SATURATED = 0.85
_NOT_PARTS = ("t", "cores", "pressure")  # cpu snapshot fields that are not a process
# A process whose event loop stood still this long explains a stall of LATE_GAP_S.
LOOP_STALL_MS = LATE_GAP_S * 1000 / 2


def _cpu_rate(samples: list[dict[str, Any]], part: str, start: float, end: float) -> float | None:
    """Cores ``part`` kept busy between ``start`` and ``end`` (run clock), or None."""
    inside = [s for s in samples if start <= s["t"] <= end and s.get(part) is not None]
    if len(inside) < 2 or inside[-1]["t"] <= inside[0]["t"]:
        return None
    return (inside[-1][part] - inside[0][part]) / (inside[-1]["t"] - inside[0]["t"])


def _level_rate(samples: list[dict[str, Any]], part: str, start: float, end: float) -> float | None:
    """A level's rate over its settled second half; over all of it when polls were late."""
    settled = _cpu_rate(samples, part, start + (end - start) / 2, end)
    return settled if settled is not None else _cpu_rate(samples, part, start, end)


def _with_cores_to_spare(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The levels before the first saturated or degraded one.

    Once the machine is full the server gets what the scheduler leaves it, and its CPU
    stops tracking its load (a later level that reads a little less busy is noise).
    """
    spare = []
    for lvl in levels:
        if lvl["saturated"] or lvl["degraded"]:
            break
        spare.append(lvl)
    return spare


def _per_session_cost(levels: list[dict[str, Any]]) -> float | None:
    """Slope of the media server's CPU against concurrent calls, least squares."""
    points = [
        (lvl["concurrent"], lvl["media_core_fraction"])
        for lvl in levels
        if lvl["media_core_fraction"] is not None
    ]
    if len(points) < 2:
        return None
    slope, _, _ = linear_fit([x for x, _ in points], [y for _, y in points])
    return slope


def _stalled_loops(before: dict[str, Any], now: dict[str, Any]) -> dict[str, float]:
    """Processes whose largest event-loop lag first passed LOOP_STALL_MS in this level."""
    return {
        part: ms
        for part, ms in now.items()
        if ms is not None and ms >= LOOP_STALL_MS and (before.get(part) or 0) < LOOP_STALL_MS
    }


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def capacity_analyse(data: list[dict[str, Any]]) -> Analysis:
    (run,) = data
    cpu = run["snapshots"]["cpu"]
    cores = next((s["cores"] for s in cpu if s.get("cores")), None)
    steps = [entry for entry in run["ramp"] if "concurrent" in entry]
    stopped = next((e["stopped"] for e in run["ramp"] if "stopped" in e), None)
    levels = []
    previous_t = 0.0
    previous_lag: dict[str, Any] = {}
    for entry in steps:
        lag = entry.get("loop_lag_max_ms") or {}
        span = (previous_t, entry["t"])
        parts = {key for sample in cpu for key in sample} - set(_NOT_PARTS)
        rates = {part: _level_rate(cpu, part, *span) for part in parts}
        used = [rate for rate in rates.values() if rate is not None]
        busy = sum(used) / cores if used and cores else None
        levels.append(
            {
                "concurrent": entry["concurrent"],
                "sessions_seen": entry["sessions"],
                "worst_uplink_loss": entry["worst_uplink_loss"],
                "worst_uplink_gap_ms": entry["worst_uplink_gap_ms"],
                "degraded": entry["degraded"],
                "media_core_fraction": _r(rates.get("media-1")),
                "callers_core_fraction": _r(rates.get("callers")),
                "lab_busy": _r(busy),
                "cpu_pressure": _r(_level_rate(cpu, "pressure", *span)),
                "saturated": busy is not None and busy >= SATURATED,
                "loop_lag_max_ms": lag,
                "stalled_loops": _stalled_loops(previous_lag, lag),
            }
        )
        previous_t, previous_lag = entry["t"], lag
    clean = [lvl for lvl in levels if not lvl["degraded"]]
    first_bad = next((lvl for lvl in levels if lvl["degraded"]), None)
    first_full = next((lvl for lvl in levels if lvl["saturated"]), None)
    spare = _with_cores_to_spare(levels)
    slope = _per_session_cost(spare)
    core_per_session = _r(slope, 4) if slope and slope > 0 else None
    metrics: dict[str, Any] = {
        "levels": levels,
        "stopped": stopped,
        "cores": cores,
        "peak_clean": clean[-1]["concurrent"] if clean else 0,
        "degraded_at": first_bad["concurrent"] if first_bad else None,
        "saturated_at": first_full["concurrent"] if first_full else None,
        "calls": len(run["calls"]),
        "calls_ok": sum(1 for c in run["calls"] if c["ok"]),
        "media_core_per_session": core_per_session,
        "sessions_per_core": round(1 / core_per_session, 1) if core_per_session else None,
    }
    rows = tuple(
        (
            lvl["concurrent"],
            lvl["media_core_fraction"],
            lvl["callers_core_fraction"],
            None if lvl["lab_busy"] is None else f"{100 * lvl['lab_busy']:.0f}%",
            None if lvl["cpu_pressure"] is None else f"{100 * lvl['cpu_pressure']:.0f}%",
            f"{100 * lvl['worst_uplink_loss']:.1f}%",
            lvl["worst_uplink_gap_ms"],
            "degraded" if lvl["degraded"] else ("saturated" if lvl["saturated"] else "clean"),
            ", ".join(f"{part} {ms:.0f}" for part, ms in sorted(lvl["stalled_loops"].items()))
            or "-",
        )
        for lvl in levels
    )
    low, high = FIELD_NOTES_CORE_PER_SESSION / 2, FIELD_NOTES_CORE_PER_SESSION * 2
    if first_bad:
        where = (
            f"degraded at {first_bad['concurrent']} concurrent calls (uplink loss "
            f"{100 * first_bad['worst_uplink_loss']:.1f}%, "
            f"stall {first_bad['worst_uplink_gap_ms']} ms"
            + (
                f", CPU pressure {100 * first_bad['cpu_pressure']:.0f}%)"
                if first_bad["cpu_pressure"] is not None
                else ")"
            )
        )
    else:
        where = f"no degradation up to the cap of {metrics['peak_clean']} concurrent calls"
    if first_full:
        full = (
            f"the lab's processes kept {100 * (first_full['lab_busy'] or 0):.0f}% of the "
            f"cores busy from "
            f"{first_full['concurrent']} calls on, the media server then at "
            f"{first_full['media_core_fraction']} of a core"
        )
    else:
        full = f"the lab's processes never kept {SATURATED:.0%} of the cores busy"
    stalled = first_bad["stalled_loops"] if first_bad else {}
    if first_bad and stalled:
        where += "; event loops that stood still then: " + ", ".join(
            f"{part} {ms:.0f} ms" for part, ms in sorted(stalled.items())
        )
    elif first_bad:
        where += f"; no process's event loop stalled over {LOOP_STALL_MS:.0f} ms"
    if not levels:
        headroom = Verdict.INCONCLUSIVE
    elif first_bad is None or (first_full and first_bad["concurrent"] >= first_full["concurrent"]):
        headroom = Verdict.CONFIRMED
    elif stalled and set(stalled) == {"callers"}:
        # Only the lab's own callers stalled: that level says nothing about the server.
        headroom = Verdict.INCONCLUSIVE
    else:
        headroom = Verdict.REFUTED
    findings = (
        Finding(
            claim="An aiortc media server costs ~4 % of a core per session (field notes)",
            expected=f"{low:.0%}-{high:.0%} of a core per added session",
            observed=(
                f"{core_per_session} of a core per added session (slope over "
                f"{len(spare)} levels with cores to spare, up to "
                f"{spare[-1]['concurrent'] if spare else 0} calls): about "
                f"{metrics['sessions_per_core']} sessions per core"
            ),
            verdict=Verdict.INCONCLUSIVE
            if core_per_session is None
            else (Verdict.CONFIRMED if low <= core_per_session <= high else Verdict.REFUTED),
            evidence=("metrics.media_core_per_session", "metrics.levels"),
        ),
        Finding(
            claim=(
                "Calls degrade (loss > 1 % or a stall > 200 ms on an uplink) only once the "
                "machine runs out of CPU"
            ),
            expected=(
                f"no degradation at a level where the lab's processes kept under "
                f"{SATURATED:.0%} of the cores busy"
            ),
            observed=f"{where}; {full}",
            verdict=headroom,
            evidence=("metrics.levels", "metrics.degraded_at", "metrics.saturated_at"),
        ),
    )
    table = (
        "Levels of the ramp (CPU in cores; busy: all the lab's processes as a share of "
        "all cores; pressure: share of time some task waited for a core)",
        (
            "concurrent calls",
            "media server",
            "callers (this process)",
            "busy",
            "CPU pressure",
            "worst uplink loss",
            "worst uplink stall (ms)",
            "state",
            f"event loops stalled > {LOOP_STALL_MS:.0f} ms",
        ),
        rows,
    )
    return Analysis(metrics=metrics, findings=findings, tables=(table,))


CAPACITY = Scenario(
    name="capacity",
    purpose="Calls ramped on one media server: CPU per session, sessions per core, degradation.",
    description=(
        "Two calls are added every few seconds on one media server, without the path "
        "emulator, until any live session's uplink shows more than 1 % loss or a stall over "
        "200 ms (as the media server reports them), or a cap. The media server's CPU (from "
        "/proc) against the number of calls, over the levels where the machine still had "
        "cores to spare, gives its cost per added session. The synthetic callers run on the "
        "same cores, so the machine saturates before the server alone would: the cost per "
        "session is the portable number; where calls degrade shows how an overloaded server "
        "fails (stalls grow before packets are lost). Every process reports its event-loop "
        "lag, so a stall is pinned on the media server, the relay or the callers themselves."
    ),
    runs=_capacity_runs,
    analyse=capacity_analyse,
    plots=("arrival",),
)


# --- port-footprint -------------------------------------------------------------


def _footprint_runs(quick: bool) -> tuple[Run, ...]:
    plan = CallPlan(count=3 if quick else 6, seconds=4.0)
    return (
        Run(
            label="direct",
            calls=plan,
            # Port-per-session is what the critique counts; a shared media socket in
            # direct topology would expose one port too.
            stack={"media_servers": 1, "topology": "direct", "media_socket": "per-session"},
            netem=False,
            tags={"topology": "direct"},
        ),
        Run(
            label="relay",
            calls=plan,
            stack={"media_servers": 1},
            netem=False,
            tags={"topology": "relay"},
        ),
    )


def _footprint_analyse(data: list[dict[str, Any]]) -> Analysis:
    metrics: dict[str, Any] = {}
    for run in data:
        topology = run["tags"]["topology"]
        public = sorted({c["remote_address"] for c in run["calls"] if c.get("remote_address")})
        internal = {(c.get("server_view") or {}).get("local_port") for c in run["calls"]} - {None}
        metrics[topology] = {
            "calls": len(run["calls"]),
            "calls_ok": sum(1 for c in run["calls"] if c["ok"]),
            "public_udp_addresses": public,
            "public_udp_ports": len(public),
            "media_server_udp_ports": len(internal),
        }
    direct, relay = metrics.get("direct"), metrics.get("relay")
    findings = []
    if direct and relay:
        confirmed = direct["public_udp_ports"] == direct["calls"] and relay["public_udp_ports"] == 1
        findings.append(
            Finding(
                claim=(
                    "Port-per-session exposes one UDP port per call; the relay muxes all on "
                    "one (critique 5)"
                ),
                expected=f"direct: {direct['calls']} public ports; relay: 1",
                observed=(
                    f"direct: {direct['public_udp_ports']} public ports "
                    f"for {direct['calls']} calls; "
                    f"relay: {relay['public_udp_ports']} for {relay['calls']} "
                    f"(its media server still binds {relay['media_server_udp_ports']} internally)"
                ),
                verdict=Verdict.CONFIRMED if confirmed else Verdict.REFUTED,
                evidence=("metrics.direct.public_udp_ports", "metrics.relay.public_udp_ports"),
            )
        )
    rows = tuple(
        (name, m["calls"], m["calls_ok"], m["public_udp_ports"], m["media_server_udp_ports"])
        for name, m in metrics.items()
    )
    table = (
        "UDP ports",
        ("topology", "calls", "ok", "ports callers send to", "ports bound by the media server"),
        rows,
    )
    return Analysis(metrics=metrics, findings=tuple(findings), tables=(table,))


PORT_FOOTPRINT = Scenario(
    name="port-footprint",
    purpose="UDP ports exposed to callers: direct topology (one per session) vs the relay (one).",
    description=(
        "The same calls with each media server exposing per-session ports (direct "
        "topology, --media-socket per-session: one ephemeral UDP port per session) and "
        "behind the relay's single port (media servers on their one shared socket). "
        "Counted from the addresses the callers actually sent media to."
    ),
    runs=_footprint_runs,
    analyse=_footprint_analyse,
    parallel=True,
    plots=("setup",),
)
