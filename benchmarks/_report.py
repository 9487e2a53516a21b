"""The run rendered: a table for the terminal, RESULTS.md for the repository (pure)."""

from __future__ import annotations

from typing import Any

from _report_workers import workers_section

NOTES_MARKER = "<!-- hand-written notes below this line are kept when the file is regenerated -->"


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _with_spread(value: float | None, spread: list[float] | None, fmt: str) -> str:
    text = _num(value, fmt)
    if spread and spread[0] != spread[1]:
        text += f" ({_num(spread[0], fmt)}-{_num(spread[1], fmt)})"
    return text


def _table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = report["summary"]["rows"]
    lines = []
    for name, row in rows.items():
        p50, p99 = _num(row["added_rtt_p50_us"], "+.0f"), _num(row["added_rtt_p99_us"], "+.0f")
        limited = " (generator-limited)" if row["generator_limited"] else ""
        lines.append(
            [
                row["label"],
                _with_spread(row["max_pps"], row["max_pps_spread"], ",.0f") + limited,
                _num(row["pps_ratio_to_nginx"], ".2f"),
                ("~" if row.get("cpu_derived") else "")
                + _with_spread(row["cpu_us_per_packet"], row["cpu_us_per_packet_spread"], ".2f"),
                _num(row["cpu_ratio_to_nginx"], ".2f"),
                _with_spread(
                    row["equal_load_cpu_us_per_packet"],
                    row["equal_load_cpu_us_per_packet_spread"],
                    ".2f",
                )
                + (
                    f" ({row['equal_load_cpu_ratio_to_nginx']:.2f})"
                    if row["equal_load_cpu_ratio_to_nginx"] is not None
                    else ""
                ),
                "baseline" if name == "direct" else f"{p50} / {p99}",
                f"{row['rtt_p50_us']:.0f} / {row['rtt_p99_us']:.0f}",
            ]
        )
    return lines


def _headers(report: dict[str, Any]) -> list[str]:
    rate = report["settings"]["latency_pps"]
    loss = report["settings"]["loss_limit"]
    equal = report["settings"].get("equal_pps", 0.0)
    return [
        "forwarder",
        f"max pps <{loss:.0%} loss",
        "ratio to nginx",
        "CPU us/packet at max",
        "ratio to nginx",
        f"CPU us/packet at {equal:,.0f}/s (ratio to nginx)",
        f"added RTT p50/p99 (us) at {rate:,.0f}/s",
        "RTT p50/p99 (us)",
    ]


def render_table(report: dict[str, Any]) -> str:
    headers = _headers(report)
    lines = _table_rows(report)
    widths = [max(len(r[i]) for r in [headers, *lines]) for i in range(len(headers))]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    out += ["", _figures_note(report), "", _proof_text(report)]
    beside = _beside_text(report)
    if beside:
        out += ["", beside]
    for key, fig in report["summary"].get("workers", {}).items():
        if fig["workers"] > 1:
            out.append(
                f"{key}: {_num(fig['pps_ratio_to_1_worker'], '.2f')}x the max rate and"
                f" {_num(fig['cpu_ratio_to_1_worker'], '.2f')}x the CPU per datagram of one"
                f" worker; busiest worker's share of flows {_num(fig['busiest_flow_share'], '.0%')}"
            )
    for name, reason in report["skipped"].items():
        out.append(f"skipped {name}: {reason}")
    return "\n".join(out)


def _figures_note(report: dict[str, Any]) -> str:
    rounds = report["settings"]["rounds"]
    if rounds == 1:
        note = "One round: each figure is one measurement."
    else:
        note = (
            f"Medians over {rounds} rounds, the lowest-highest in brackets; each ratio is taken"
            " within a round, then its median."
        )
    disturbed = sum(row["disturbed_steps"] for row in report["summary"]["rows"].values())
    if disturbed:
        note += (
            f" {disturbed} failing steps were repeated because the forwarder had used less"
            " than 80 % of its core: something else had it (a neighbour on the machine)."
        )
    cut = {
        row["label"]: row["disturbed_verdicts"]
        for row in report["summary"]["rows"].values()
        if row.get("disturbed_verdicts")
    }
    if cut:
        note += (
            " Still disturbed after two repeats, a failing step's verdict stands, so that"
            ' round\'s maximum is a lower bound (marked >= in "Each round"): '
            + ", ".join(f"{label} {n}" for label, n in cut.items())
            + "."
        )
    if any(row.get("cpu_derived") for row in report["summary"]["rows"].values()):
        note += (
            " ~: the kernel has no process of its own; its CPU per datagram is the extra time"
            " the generator's send calls took through the NAT rule, against straight to the"
            " sink, at the same rate, one datagram per send."
        )
    return note


def _proof_text(report: dict[str, Any]) -> str:
    g = report["summary"]["generator"]
    if g["best_forwarder"] is None:
        return "Generator check: no user-space forwarder was measured."
    verdict = "was NOT the bottleneck" if g["not_the_bottleneck"] else "MAY have been a bottleneck"
    at_socket = g["forwarder_socket_drops"] / g["lost"] if g["lost"] else None
    share = g["min_sent_share_at_max"]
    return " ".join(
        [
            f"Generator check: the generator + sink {verdict}.",
            f"Sending as fast as it could it sent {_num(g['capacity_pps'])}/s, and the direct"
            f" path (same generator and sink, no forwarder) carried {_num(g['direct_max_pps'])}/s"
            f" at <{report['settings']['loss_limit']:.0%} loss; in every round at least"
            f" {_num(g['min_headroom'], '.2f')}x the best forwarder of that round"
            f" ({g['best_forwarder']}; median {_num(g['best_forwarder_pps'])}/s).",
            f"At each forwarder's maximum it sent >= {_num(share and share * 100, '.1f')}% of the"
            " offered rate, and "
            + (
                "each maximum is bracketed by a failing step at which it sent faster."
                if g["all_maxima_bracketed"]
                else "NOT every maximum is bracketed by a faster failing step."
            ),
            f"Over all forwarder steps the sink's socket dropped {g['sink_socket_drops']}"
            f" datagrams and the forwarder's {g['forwarder_socket_drops']}"
            + (f" ({at_socket:.0%} of all lost)" if at_socket is not None else "")
            + f"; the sink's drops decided {g['steps_decided_by_sink_drops']} step verdicts"
            + (
                ": the losses were at the forwarder."
                if not g["steps_decided_by_sink_drops"]
                else "."
            ),
        ]
    )


def _beside_text(report: dict[str, Any]) -> str:
    """The generator check for paths with a worker on the generator's core (spread)."""
    g = report["summary"].get("generator_beside")
    if not g:
        return ""
    share = g["min_sent_share_at_max"]
    kept_up = share is not None and share >= 0.99
    return " ".join(
        [
            "With a worker beside the generator (spread:"
            f" {', '.join(dict.fromkeys(n for p in g['rounds'] for n in p['forwarders']))}) the"
            " generator shares its core by design, so the direct path's headroom proves nothing"
            " for those paths.",
            f"At each of their maxima the generator sent >= {_num(share and share * 100, '.1f')}%"
            " of the offered rate"
            + (
                ""
                if kept_up
                else " (below 99 %: there, the generator, starved by the worker beside it, may"
                " be what limited the rate)"
            )
            + ", and "
            + (
                "each maximum is bracketed by a failing step at which it sent faster."
                if g["all_maxima_bracketed"]
                else "NOT every maximum is bracketed by a faster failing step."
            ),
            f"The sink's socket dropped {g['sink_socket_drops']} datagrams over their steps and"
            f" the forwarders' {g['forwarder_socket_drops']}; the sink's drops decided"
            f" {g['steps_decided_by_sink_drops']} step verdicts.",
        ]
    )


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(report: dict[str, Any], previous: str = "") -> str:
    m = report["machine"]
    s = report["settings"]
    before, after = report["load_before"], report["load_after"]
    lines = [
        "# Relay throughput and latency",
        "",
        "Generated by `benchmarks/relay_throughput.py`"
        f" ({'--quick' if s['quick'] else 'full run'}), started {report['started']},"
        f" {report['wall_seconds']} s wall time.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores"
        f"{' (a virtual machine)' if m['virtualised'] else ''}",
        f"- Kernel {m['kernel']}; {m['os']}; Python {m['python']}; uvloop {m['uvloop']}; "
        f"{m['nginx']}; gcc {m['gcc']}",
        f"- Load average (1/5/15 min) before: {_load(before)}; after: {_load(after)}",
        f"- Other busy processes before: {_busy(before)}; after: {_busy(after)}",
        "",
        "## Method",
        "",
        f"- {s['flows']} flows of {s['size_bytes']}-byte RTP-shaped datagrams (first byte 0x80),"
        " each flow its own client source port, primed with one STUN Binding request whose"
        " route token names the sink's port (nginx and the kernel just forward it).",
        "- Generator and sink: one single-threaded C program (`udpblast.c`: a batch to a flow is"
        " one UDP GSO send that the kernel splits into single datagrams on delivery, so the"
        " forwarder reads one at a time; sendmmsg for the kernel path; recvmmsg at the sink;"
        f" busy-polled open-loop pacing) pinned to core {s['generator_cpu']}; the forwarder"
        f" alone on core {s['forwarder_cpu']}"
        + (
            ' (with several workers: see "Worker processes" for where each ran)'
            if max(s.get("workers", [1])) > 1
            else ""
        )
        + f". All in a {s['network_namespace']} network namespace, loopback only.",
        f"- Max rate: one-way steps of {s['step_seconds']:g} s; the first at what the generator"
        " can offer, then bisection seeded by what the overloaded step delivered (an upper"
        " bound assumed from it is tested before the search may end on it), until the bracket"
        f" is within 2 % or after {s['search_steps']} steps; a step passes below"
        f" {s['loss_limit']:.0%} loss"
        ' (sent vs. received by the sink after a drain). "max pps" is the sent rate of the'
        " fastest passing step.",
        "- CPU us/packet: the forwarder's utime+stime (/proc/PID/stat) summed over all its"
        " processes (nginx: master + workers; the relay with --workers: parent + workers +"
        " multiprocessing's resource tracker) over that step, divided by the datagrams the sink"
        " received. The kernel path has no"
        " process: its work is done in the sender's context, inside the generator's send"
        " calls, so its figure (~) is the extra time those took per datagram through the NAT"
        " rule, against straight to the sink, at 100,000/s one datagram per send both times.",
        f"- Equal load: after the search, one more step at {s.get('equal_pps', 0.0):,.0f}/s for"
        " every forwarder with a process of its own. CPU per datagram falls as the rate rises"
        " (fewer wake-ups per datagram), so figures taken at each forwarder's own maximum"
        " compare different loads; this one compares all of them at the same.",
        "- Disturbed steps: a forwarder that cannot keep up runs flat out (90-100 % of its core"
        " here). A failing step at which it used under 80 % of its core (CPU time over the"
        " time until its last datagram arrived) lost datagrams because its core was taken from"
        " it; it is repeated, at most twice. Passing steps are never repeated.",
        f"- Round trip: {s['latency_pps']:,.0f} requests/s in total for {s['latency_seconds']:g} s,"
        " echoed by the sink through the forwarder; the send time is in the payload."
        " \"added\" is the path's percentile minus the direct path's.",
        f"- {s['rounds']} round(s): every path measured once per round, in this order, so"
        " each ratio compares measurements minutes apart at most; the table gives the"
        " median over rounds (lowest-highest in brackets) and the median of per-round ratios.",
        "- Ratios are against nginx with one worker process, measured in the same run.",
        "",
        "## Results",
        "",
        *_markdown_table(_headers(report), _table_rows(report)),
        "",
        _figures_note(report),
        "",
        _proof_text(report),
        "",
    ]
    for name, reason in report["skipped"].items():
        lines.append(f"Skipped {name}: {reason}")
    beside = _beside_text(report)
    if beside:
        lines += [beside, ""]
    lines += workers_section(report)
    lines += _latency_section(report)
    lines += _rounds_section(report)
    _, _, notes = previous.partition(NOTES_MARKER)
    lines += [NOTES_MARKER, notes.strip("\n") or "", ""]
    return "\n".join(lines)


def _latency_section(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    headers = [
        "path",
        "p50",
        "p99",
        "p99.9",
        "p99 of the median 1-s window",
        "added p99 of the median 1-s window",
        "forwarder CPU us/packet at this rate",
    ]
    body = [
        [
            row["label"],
            _num(row["rtt_p50_us"], ".0f"),
            _num(row["rtt_p99_us"], ".0f"),
            _num(row["rtt_p999_us"], ".0f"),
            _num(row["rtt_p99_typical_us"], ".0f"),
            "baseline" if name == "direct" else _num(row["added_rtt_p99_typical_us"], "+.0f"),
            _num(row["latency_cpu_us_per_packet"], ".2f"),
        ]
        for name, row in report["summary"]["rows"].items()
    ]
    return [
        "",
        f"## Round trips at {s['latency_pps']:,.0f}/s (us, medians over rounds)",
        "",
        "A p99 over the whole test moves with any neighbour's burst on the machine; the p99"
        " of the median one-second window shows what a typical second looked like.",
        "",
        *_markdown_table(headers, body),
        "",
    ]


def _rounds_section(report: dict[str, Any]) -> list[str]:
    lines = ["## Each round", ""]
    equal = report["settings"].get("equal_pps", 0.0)
    headers = [
        "round",
        "load avg before",
        "path",
        "max pps",
        "CPU us/packet at max",
        f"CPU us/packet at {equal:,.0f}/s",
        "RTT p50/p99 (us)",
    ]
    body = []
    for number, (found, rows) in enumerate(
        zip(report["rounds"], report["summary"]["per_round"], strict=True), start=1
    ):
        for name, row in rows.items():
            body.append(
                [
                    str(number),
                    f"{found['load_before'][0]:.2f}",
                    name,
                    (">= " if row.get("disturbed_verdicts") else "") + _num(row["max_pps"]),
                    _num(row["cpu_us_per_packet"], ".2f"),
                    _num(row["equal_load_cpu_us_per_packet"], ".2f"),
                    f"{row['rtt_p50_us']:.0f} / {row['rtt_p99_us']:.0f}",
                ]
            )
    lines += [*_markdown_table(headers, body), "", "## Steps", ""]
    step_headers = [
        "round",
        "offered/s",
        "sent/s",
        "delivered/s",
        "loss",
        "CPU us/packet",
        "forwarder busy (its own core; each worker)",
        "kernel drops (forwarder sockets (each worker) / sink socket)",
        "verdict",
    ]
    labels = {name: row["label"] for name, row in report["summary"]["rows"].items()}
    for name, label in labels.items():
        body = []
        counters = []
        for number, found in enumerate(report["rounds"], start=1):
            result = found["paths"].get(name)
            if result is None:
                continue
            before = [result[k] for k in ("unpaced", "reference") if k in result]
            after = [result[k] for k in ("nat_probe", "equal_load") if k in result]
            steps = before + result["steps"] + after
            body += [[str(number), *_step_cells(st)] for st in steps]
            drops = (result.get("forwarder_counters") or {}).get("drops")
            if drops:
                counters.append(f"round {number}: {drops}")
        lines += [f"**{label}**", "", *_markdown_table(step_headers, body), ""]
        if counters:
            lines += [f"The relay's own drop counters at the end: {'; '.join(counters)}", ""]
    return lines


def _step_cells(step: dict[str, Any]) -> list[str]:
    return [
        (
            ("max" if step["offered_pps"] == 0 else _num(step["offered_pps"]))
            + (" (sendmmsg)" if step.get("sends") == "sendmmsg" else "")
        ),
        _num(step["achieved_pps"]),
        _num(step["delivered_pps"]),
        f"{step['loss']:.2%}",
        _num(step["cpu_us_per_packet"], ".2f"),
        _num(step.get("forwarder_busy"), ".0%") + _per_worker_busy(step),
        _drops(step["kernel_drops"], _per_worker_drops(step)),
        ("pass" if step["passed"] else "fail")
        + (", disturbed" if step.get("disturbed") else "")
        + (" (no repeat left)" if step.get("disturbed_verdict") else "")
        + (f", {step['purpose']}" if step.get("purpose") else ""),
    ]


def _per_worker_busy(step: dict[str, Any]) -> str:
    """Each worker's share of a core over the step, when there are several."""
    by_process = step.get("cpu_s_by_process", {})
    workers = {role: cpu for role, cpu in by_process.items() if role.startswith("worker")}
    elapsed = step["send_seconds"] + step["drain_active_seconds"]
    if len(workers) < 2 or not elapsed:
        return ""
    return " (" + ", ".join(f"{role} {cpu / elapsed:.0%}" for role, cpu in workers.items()) + ")"


def _per_worker_drops(step: dict[str, Any]) -> str:
    by_process = step.get("drops_by_process", {})
    if len(by_process) < 2:
        return ""
    return " (" + ", ".join(f"{role} {n}" for role, n in by_process.items()) + ")"


def _load(sample: dict[str, Any]) -> str:
    return " / ".join(f"{v:.2f}" for v in sample["loadavg"])


def _busy(sample: dict[str, Any]) -> str:
    busy = sample["busy_processes"]
    if not busy:
        return "none over 5 % of a core"
    return ", ".join(f"{p['comm']} ({p['cpu_percent']} %)" for p in busy[:8])


def _drops(drops: dict[str, int], per_worker: str = "") -> str:
    return f"{drops['forwarder_socket']}{per_worker} / {drops['sink_socket']}"
