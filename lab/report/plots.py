"""PNG plots of a scenario's results (matplotlib, no display needed).

Each plot reads only results.json data: per-call audio arrival over time with
the timeline's events marked, the distribution of gaps between frames, a
setup waterfall per call, and the distribution of the silence that repeated
moves caused (``metrics.recovery``: groups of per-move gaps, None for never).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lab.report.analysis import AUDIBLE_GAP_S, Spread, gaps

SETUP_PHASES = ("answer", "ice_connected", "dtls_connected", "datachannel_open", "first_audio_in")
PHASE_COLOURS = ("#9ecae1", "#6baed6", "#3182bd", "#fd8d3c", "#31a354")


def segments(
    arrivals_s: list[float], max_gap_s: float = AUDIBLE_GAP_S
) -> list[tuple[float, float]]:
    """Collapse frame arrival times into (start, end) stretches of continuous audio."""
    out: list[tuple[float, float]] = []
    for t in arrivals_s:
        if out and t - out[-1][1] <= max_gap_s:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def _downlink_s(call: dict[str, Any]) -> list[float]:
    return [ms / 1000 for ms in (call.get("timeline") or {}).get("downlink_ms", [])]


def plot_arrival(results: dict[str, Any], path: Path) -> None:
    runs = results["runs"]
    rows = sum(max(1, len(run["calls"])) for run in runs)
    fig = Figure(figsize=(10, 1.5 + 0.45 * rows + 0.4 * len(runs)))
    axes = fig.subplots(len(runs), 1, squeeze=False, sharex=True)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        for row, call in enumerate(run["calls"]):
            timeline = call.get("timeline") or {}
            down = [(s, e - s + 0.02) for s, e in segments(_downlink_s(call))]
            ax.broken_barh(
                down,
                (row + 0.05, 0.4),
                color="#3182bd",
                label="downlink (heard by caller)" if row == 0 else None,
            )
            up = [
                (s / 1000, (e - s) / 1000 + 0.02) for s, e in timeline.get("uplink_segments_ms", [])
            ]
            ax.broken_barh(
                up,
                (row + 0.5, 0.4),
                color="#31a354",
                label="uplink (heard by server)" if row == 0 else None,
            )
        for step in run.get("steps", []):
            at = step.get("done_at_s", step["at_s"])
            ax.axvline(at, color="#d62728", linestyle="--", linewidth=1)
            ax.text(
                at,
                len(run["calls"]) + 0.05,
                step["action"],
                color="#d62728",
                fontsize=8,
                va="bottom",
            )
        ax.set_yticks([i + 0.5 for i in range(len(run["calls"]))])
        ax.set_yticklabels([f"call {i + 1}" for i in range(len(run["calls"]))], fontsize=8)
        ax.set_ylim(0, len(run["calls"]) + 0.6)
        ax.set_title(run["label"], fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the first call started")
    fig.suptitle(f"{results['scenario']}: audio arrival per call", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_gaps(results: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for run in results["runs"]:
        values = [g * 1000 for call in run["calls"] for g in gaps(_downlink_s(call))]
        if not values:
            continue
        ordered = sorted(values)
        n = len(ordered)
        ax.step(ordered, [1 - i / n for i in range(n)], where="post", label=run["label"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gap between downlink frames (ms)")
    ax.set_ylabel("fraction of gaps >= x")
    ax.axvline(20, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=7)
    ax.set_title(f"{results['scenario']}: downlink gap distribution (CCDF)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_setup(results: dict[str, Any], path: Path) -> None:
    calls = [
        (run["label"], i, call) for run in results["runs"] for i, call in enumerate(run["calls"])
    ]
    fig = Figure(figsize=(9, 1 + 0.28 * max(1, len(calls))))
    ax = fig.subplots()
    for row, (_label, _index, call) in enumerate(calls):
        setup = call.get("setup_ms") or {}
        previous = 0.0
        for phase, colour in zip(SETUP_PHASES, PHASE_COLOURS, strict=True):
            value = setup.get(phase)
            if value is None:
                continue
            start = min(previous, value)
            ax.barh(
                row,
                max(value - start, 0.5),
                left=start,
                color=colour,
                label=phase if row == 0 else None,
            )
            previous = max(previous, value)
    ax.set_yticks(range(len(calls)))
    ax.set_yticklabels([f"{label} #{index + 1}" for label, index, _ in calls], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the offer was POSTed")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{results['scenario']}: setup waterfall per call", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


DIRECTIONS = (("uplink", "#31a354", "o"), ("downlink", "#3182bd", "s"))


def plot_recovery(results: dict[str, Any], path: Path) -> None:
    """Each move's gap per group and direction, its median marked; "never" at the right."""
    groups = (results.get("metrics") or {}).get("recovery", {}).get("groups", [])
    finite = [
        value
        for group in groups
        for direction, _, _ in DIRECTIONS
        for value in group.get(direction) or []
        if value is not None
    ]
    never_at = max([10.0, *finite]) * 1.12
    rows = max(1, len(groups))
    fig = Figure(figsize=(9, 1.4 + 0.6 * rows))
    ax = fig.subplots()
    labelled: set[str] = set()
    for row, group in enumerate(groups):
        for offset, (direction, colour, marker) in zip((-0.15, 0.15), DIRECTIONS, strict=True):
            values = group.get(direction) or []
            if not values:
                continue
            label = None if direction in labelled else f"{direction} gap"
            labelled.add(direction)
            xs = [never_at if v is None else v for v in values]
            # Spread equal values a little so every move shows.
            ys = [row + offset + 0.04 * ((i % 3) - 1) for i in range(len(xs))]
            ax.scatter(
                xs,
                ys,
                color=colour,
                marker=marker,
                s=22,
                alpha=0.8,
                label=label,
            )
            median = Spread(tuple(values)).median
            ax.vlines(
                never_at if median is None else median,
                row + offset - 0.12,
                row + offset + 0.12,
                color=colour,
                linewidth=2.5,
            )
    ax.axvline(never_at * 0.96, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yticks(range(rows))
    ax.set_yticklabels([str(group.get("label")) for group in groups] or ["-"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.3, never_at * 1.05)
    ticks = [t for t in ax.get_xticks() if 0 <= t < never_at * 0.95]
    ax.set_xticks([*ticks, never_at])
    ax.set_xticklabels([f"{t:g}" for t in ticks] + ["never"])
    ax.set_xlabel("silence around the move (s); each mark is one move, the bar its median")
    if labelled:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{results['scenario']}: gap per move", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


PLOTTERS = {
    "arrival": ("Audio arrival per call, events marked", plot_arrival),
    "gaps": ("Distribution of gaps between downlink frames", plot_gaps),
    "setup": ("Setup waterfall per call", plot_setup),
    "recovery": ("Gap per move, per policy and direction (median marked)", plot_recovery),
}


def render_plots(
    results: dict[str, Any], out_dir: Path, kinds: tuple[str, ...]
) -> list[dict[str, str]]:
    """Write the requested plots into ``out_dir``; return [{"title", "file"}] for the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in kinds:
        title, plotter = PLOTTERS[kind]
        file = f"{kind}.png"
        plotter(results, out_dir / file)
        written.append({"title": title, "file": file})
    return written
