"""Render a scenario's results.json as report.md, and the index of a whole run.

The report is built from results.json alone, so every number in it can be
traced back to that file (the verdict table names where its evidence lives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _call_rows(run: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for call in run.get("calls", []):
        setup = call.get("setup_ms") or {}
        up = call.get("uplink") or {}
        down = call.get("downlink") or {}
        latencies = [t.get("latency_ms") for t in call.get("turns") or [] if t.get("latency_ms")]
        rows.append(
            [
                call.get("call_id") or "-",
                call.get("backend"),
                "ok" if call.get("ok") else f"failed: {call.get('error')}",
                setup.get("first_audio_in"),
                up.get("loss_ratio"),
                up.get("max_gap_ms"),
                down.get("loss_ratio"),
                down.get("max_gap_ms"),
                round(sum(latencies) / len(latencies)) if latencies else None,
            ]
        )
    return rows


CALL_HEADER = (
    "call",
    "backend",
    "result",
    "first audio (ms)",
    "uplink loss",
    "uplink max gap (ms)",
    "downlink loss",
    "downlink max gap (ms)",
    "mean turn latency (ms)",
)


def render_report(results: dict[str, Any]) -> str:
    out: list[str] = [f"# Scenario `{results['scenario']}`", "", results.get("purpose", ""), ""]
    if results.get("description"):
        out += [results["description"], ""]
    env = results.get("environment", {})
    out += [
        f"Run {results.get('started_at', '?')}, {results.get('duration_s', 0):.0f} s"
        + (" (quick set)" if results.get("quick") else "")
        + f"; {env.get('summary', '')}.",
        "All numbers below come from `results.json` next to this file.",
        "",
    ]
    for title, header, rows in results.get("tables", []):
        out += [f"## {title}", "", table(header, rows), ""]
    for plot in results.get("plots", []):
        out += [f"![{plot['title']}]({plot['file']})", ""]
    out += ["## Runs", ""]
    for index, run in enumerate(results.get("runs", [])):
        out += [f"### {run['label']}", ""]
        if run.get("steps"):
            out += ["Timeline: " + "; ".join(step["describe"] for step in run["steps"]), ""]
        out += [table(CALL_HEADER, _call_rows(run)), ""]
        if run.get("netem_overhead"):
            o = run["netem_overhead"]
            out += [
                f"Path emulator overhead: {o.get('summary', o)} (`runs[{index}].netem_overhead`).",
                "",
            ]
    out += ["## Verdicts", ""]
    findings = results.get("findings", [])
    out += [
        table(
            ("claim", "expected", "observed", "verdict"),
            [(f["claim"], f["expected"], f["observed"], f"**{f['verdict']}**") for f in findings],
        ),
        "",
    ]
    evidence = [
        f"- {f['claim']}: " + ", ".join(f"`{e}`" for e in f["evidence"])
        for f in findings
        if f.get("evidence")
    ]
    if evidence:
        out += ["Evidence in results.json:", "", *evidence, ""]
    return "\n".join(out)


def render_index(entries: Sequence[dict[str, Any]], header_note: str = "") -> str:
    """The index of a `scenario run` over several scenarios."""
    out = ["# rtclab scenario results", ""]
    if header_note:
        out += [header_note, ""]
    rows = []
    verdict_rows = []
    for entry in entries:
        name = entry["scenario"]
        link = f"[{name}]({name}/report.md)"
        findings = entry.get("findings", [])
        counts: dict[str, int] = {}
        for f in findings:
            counts[f["verdict"]] = counts.get(f["verdict"], 0) + 1
        status = entry.get("error") or ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        rows.append((link, entry.get("purpose", ""), f"{entry.get('duration_s', 0):.0f} s", status))
        verdict_rows += [
            (link, f["claim"], f["expected"], f["observed"], f"**{f['verdict']}**")
            for f in findings
        ]
    out += [table(("scenario", "purpose", "time", "verdicts"), rows), ""]
    out += [
        "## Every verdict",
        "",
        table(("scenario", "claim", "expected", "observed", "verdict"), verdict_rows),
        "",
    ]
    return "\n".join(out)
