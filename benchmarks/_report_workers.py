"""RESULTS.md's section on the --workers axis: what a second worker bought, and where (pure)."""

from __future__ import annotations

from typing import Any

from _workers import WORKER_AXIS


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _with_spread(value: float | None, spread: list[float] | None, fmt: str) -> str:
    text = _num(value, fmt)
    if value is not None and spread and spread[0] != spread[1]:
        text += f" ({_num(spread[0], fmt)}-{_num(spread[1], fmt)})"
    return text


def workers_section(report: dict[str, Any]) -> list[str]:
    """The workers table and the per-worker detail; nothing when no multi-worker path ran."""
    summary = report["summary"]
    figures = summary.get("workers") or {}
    if not any(f["workers"] > 1 for f in figures.values()):
        return []
    s = report["settings"]
    rows = summary["rows"]
    headers = [
        "forwarder",
        "workers",
        "cores (worker: core)",
        "max pps",
        "vs. 1 worker",
        "CPU us/packet at max (all processes)",
        "vs. 1 worker",
        f"CPU us/packet at {s.get('equal_pps', 0.0):,.0f}/s",
        "vs. 1 worker",
        "busiest worker's share of flows",
        "supervisor's share of the CPU",
    ]
    body = []
    for kind in WORKER_AXIS:
        for key, fig in figures.items():
            if fig["kind"] != kind or key not in rows:
                continue
            row = rows[key]
            cores = ", ".join(f"{i}: {c}" for i, c in enumerate(fig["cores"]))
            body.append(
                [
                    row["label"],
                    str(fig["workers"]),
                    cores,
                    _with_spread(row["max_pps"], row["max_pps_spread"], ",.0f"),
                    _num(fig["pps_ratio_to_1_worker"], ".2f"),
                    _with_spread(row["cpu_us_per_packet"], row["cpu_us_per_packet_spread"], ".2f"),
                    _num(fig["cpu_ratio_to_1_worker"], ".2f"),
                    _with_spread(
                        row["equal_load_cpu_us_per_packet"],
                        row["equal_load_cpu_us_per_packet_spread"],
                        ".2f",
                    ),
                    _num(fig["equal_load_cpu_ratio_to_1_worker"], ".2f"),
                    _share_cell(fig, "busiest_flow_share"),
                    _share_cell(fig, "supervisor_cpu_share"),
                ]
            )
    return [
        "",
        "## Worker processes (--workers)",
        "",
        "N processes on the one public port, each with its own socket (SO_REUSEPORT): the"
        " kernel hashes each client's address and port onto one socket, so each worker serves"
        " a share of the flows. The relay runs `--workers N` (a supervising parent that serves"
        " the admin address, N workers, and multiprocessing's resource tracker); nginx runs"
        " `worker_processes N` with `reuseport` (a master, N workers). CPU per datagram sums"
        " every one of those processes.",
        "",
        *_placements(report),
        "",
        '"vs. 1 worker" is the same forwarder with one worker in the same round (the median'
        " of per-round ratios); the ratios to nginx in the main table are against nginx with"
        " one worker. Each path's CPU per datagram at its own maximum is taken at a different"
        " rate, and it falls as the rate rises (fewer wake-ups per datagram), so the step at"
        f" {s.get('equal_pps', 0.0):,.0f}/s, the same for every path, is the like-for-like"
        " figure for what a second worker costs. Flows per worker are counted from each"
        " process's sockets connected to the sink (one upstream socket per flow); they change"
        " from path to path because the generator's source ports do.",
        "",
        *_table(headers, body),
        "",
        *_per_worker(report),
    ]


def _placements(report: dict[str, Any]) -> list[str]:
    """Where the workers ran, for each placement measured, and what that measures."""
    s = report["settings"]
    gen, fwd, cores = s["generator_cpu"], s["forwarder_cpu"], report["machine"]["cores"]
    lines = [
        f"The machine has {cores} cores and the generator + sink has core {gen}"
        + (
            ", so a second worker can only share a core with something, and no placement"
            " measures scaling:"
            if cores == 2
            else ":"
        ),
        "",
    ]
    about = {
        "one-core": f"every worker on the forwarder's core {fwd}. Nothing shares the"
        " generator's core; against one worker this measures the overhead of being several"
        " processes (more wake-ups, two socket queues, context switches), not scaling.",
        "spread": f"worker 0 on core {fwd}, worker 1 on core {gen} beside the generator,"
        " which busy-polls its pacing clock and so is always runnable: that worker gets what"
        " the scheduler takes from the generator. This measures contention, and what it costs"
        " the generator is in the generator check above. Losses at that worker's socket are"
        " what the placement measures, so a step is only called disturbed (and repeated) when"
        f" the worker on core {fwd} lost datagrams while leaving its core idle.",
        "free-cores": f"the workers over every core but the generator's, core {fwd} first:"
        " each worker with a core of its own, which is what measures scaling.",
    }
    lines += [f"- **{p}**: {about[p]}" for p in s.get("placements", []) if p in about]
    return lines


def _share_cell(fig: dict[str, Any], name: str) -> str:
    value, spread = fig[name], fig[name + "_spread"]
    if value is None:
        return "n/a"
    text = _pct(value)
    if spread and round(spread[0], 2) != round(spread[1], 2):
        text += f" ({_pct(spread[0])}-{_pct(spread[1])})"
    return text


def _per_worker(report: dict[str, Any]) -> list[str]:
    headers = [
        "round",
        "path",
        "process",
        "core",
        "flows",
        "share of datagrams (relay's /metrics)",
        "share of the path's CPU at its max",
        "CPU at its max (% of a core)",
        "socket drops over the search",
    ]
    body = []
    for number, figures in enumerate(report["summary"]["workers_per_round"], start=1):
        for key, fig in figures.items():
            if fig["workers"] == 1:
                continue
            for worker in fig["per_worker"]:
                body.append(
                    [
                        str(number),
                        key,
                        worker["role"],
                        str(worker["cpu"]),
                        _num(worker["flows"], "d"),
                        _pct(worker["datagram_share"]),
                        _pct(worker["cpu_share_at_max"]),
                        _pct(worker["busy_at_max"]),
                        f"{worker['socket_drops']:,}",
                    ]
                )
    return [
        "Each worker, each round (the datagram share counts every client datagram the worker"
        " forwarded over the whole path, overload steps included; nginx does not count them):",
        "",
        *_table(headers, body),
        "",
    ]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out
