"""Run scenarios end to end and write what they found: results.json, report.md, plots.

``results.json`` is the record (versioned by :data:`SCHEMA`); report.md and the
PNGs are rendered from it alone.  A scenario that crashes still leaves a
results.json saying so, and the index lists it as failed: a run of the whole
catalogue never loses the scenarios that worked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from lab.report.markdown import render_index, render_report
from lab.report.plots import render_plots
from lab.report.text import call_summary
from lab.scenarios.environment import LOOPBACK, LabEnvironment
from lab.scenarios.model import Analysis, Run, Scenario
from lab.scenarios.runner import Progress, execute_run

log = logging.getLogger("rtclab.scenario")

SCHEMA = 1


def environment(lab: LabEnvironment = LOOPBACK) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in ("aiortc", "aioice", "aiohttp", "uvloop"):
        try:
            packages[name] = version(name)
        except Exception:
            packages[name] = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    summary = (
        f"{cores} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"aiortc {packages['aiortc']}, aioice {packages['aioice']}; {lab.describe()}"
    )
    return {
        "cpu": cpu,
        "cores": cores,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
        "lab": lab.name,
        "summary": summary,
    }


def _finding_json(analysis: Analysis) -> list[dict[str, Any]]:
    out = []
    for finding in analysis.findings:
        entry = asdict(finding)
        entry["verdict"] = finding.verdict.value
        entry["evidence"] = list(finding.evidence)
        out.append(entry)
    return out


async def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    quick: bool,
    progress: Progress,
    lab: LabEnvironment = LOOPBACK,
) -> dict[str, Any]:
    """Run every run of ``scenario``, analyse, and write its directory."""
    started = time.time()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "scenario": scenario.name,
        "purpose": scenario.purpose,
        "description": scenario.description,
        "quick": quick,
        "seed": scenario.seed,
        "started_at": datetime.fromtimestamp(started, tz=UTC).isoformat(timespec="seconds"),
        "environment": environment(lab),
        "runs": [],
        "metrics": {},
        "findings": [],
        "tables": [],
        "plots": [],
        "error": None,
    }
    runs = []
    results["skipped_runs"] = []
    for run in scenario.runs(quick):
        reason = lab.skip_reason(run)
        if reason is None:
            runs.append(run)
        else:
            results["skipped_runs"].append({"label": run.label, "reason": reason})
    try:
        if not runs:
            raise RuntimeError(f"this lab ({lab.name}) can do none of the runs")
        log_root = out_dir / "logs"
        if scenario.parallel and lab.parallel_runs:
            gate = asyncio.Semaphore(scenario.max_parallel or len(runs))

            async def bounded(index: int, run: Run) -> dict[str, Any]:
                async with gate:
                    return await execute_run(run, log_root / f"run{index}", progress, lab)

            data = await asyncio.gather(*(bounded(i, run) for i, run in enumerate(runs)))
        else:
            data = [
                await execute_run(run, log_root / f"run{index}", progress, lab)
                for index, run in enumerate(runs)
            ]
        results["runs"] = list(data)
        _conclude(scenario, results, out_dir)
    except Exception as exc:
        log.exception("scenario failed", extra={"scenario": scenario.name})
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["traceback"] = traceback.format_exc()
    results["duration_s"] = round(time.time() - started, 1)
    write_scenario(out_dir, results)
    return results


def _conclude(scenario: Scenario, results: dict[str, Any], out_dir: Path) -> None:
    """The analysis of ``results["runs"]`` into ``results``, and the plots into ``out_dir``."""
    analysis = scenario.analyse(results["runs"])
    results["metrics"] = dict(analysis.metrics)
    results["findings"] = _finding_json(analysis)
    results["tables"] = [
        [title, list(header), [list(r) for r in rows]] for title, header, rows in analysis.tables
    ]
    results["plots"] = render_plots(results, out_dir, scenario.plots)


def merge_passes(
    scenario: Scenario, parts: Mapping[str, dict[str, Any]], out_dir: Path
) -> dict[str, Any]:
    """One scenario's results from runs made in separate passes, analysed together.

    A lab whose stack is fixed while it runs (the compose lab: one relay, one
    ``--rebind`` policy at a time) runs a scenario once per stack it needs; each
    pass skips the runs it cannot serve.  ``parts`` maps a pass's label to the
    results.json it wrote.  The merged record keeps every run that ran (in the
    scenario's own order), the runs no pass could serve, and where each pass's
    own record is; the analysis, verdicts and plots are made over all runs.
    """
    labels = list(parts)
    first = parts[labels[0]]
    order = {run.label: index for index, run in enumerate(scenario.runs(bool(first["quick"])))}
    runs = sorted(
        (run for part in parts.values() for run in part["runs"]),
        key=lambda run: order.get(run["label"], len(order)),
    )
    ran = {run["label"] for run in runs}
    skipped: dict[str, dict[str, Any]] = {}
    for part in parts.values():
        for entry in part.get("skipped_runs", []):
            if entry["label"] not in ran:
                skipped.setdefault(entry["label"], entry)
    environment_ = dict(first["environment"])
    environment_["summary"] = (
        f"{environment_['summary']}; its runs come from {len(parts)} pass(es) of the stack "
        f"({', '.join(labels)})"
    )
    results: dict[str, Any] = {
        **{key: value for key, value in first.items() if key != "traceback"},
        "started_at": min(part["started_at"] for part in parts.values()),
        "environment": environment_,
        "runs": runs,
        "skipped_runs": list(skipped.values()),
        "passes": [
            {"label": label, "duration_s": part.get("duration_s"), "error": part["error"]}
            for label, part in parts.items()
        ],
        "metrics": {},
        "findings": [],
        "tables": [],
        "plots": [],
        "error": None,
        "duration_s": round(sum(part.get("duration_s") or 0.0 for part in parts.values()), 1),
    }
    errors = [f"{label}: {part['error']}" for label, part in parts.items() if part["error"]]
    try:
        if errors:
            raise RuntimeError(
                "a pass failed (its own results.json has the traceback): " + "; ".join(errors)
            )
        _conclude(scenario, results, out_dir)
    except Exception as exc:
        log.exception("merging failed", extra={"scenario": scenario.name})
        results["error"] = f"{type(exc).__name__}: {exc}"
        results["traceback"] = traceback.format_exc()
    write_scenario(out_dir, results)
    return results


def index_entry(scenario: Scenario, results: Mapping[str, Any]) -> dict[str, Any]:
    """What index.md and index.json say about one scenario's results."""
    return {
        "scenario": scenario.name,
        "purpose": scenario.purpose,
        "duration_s": results["duration_s"],
        "error": results["error"],
        "findings": results["findings"],
    }


def write_scenario(out_dir: Path, results: dict[str, Any]) -> None:
    """results.json, then report.md rendered from it (plots are already written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    report = render_report(results)
    if results["error"]:
        report += f"\n## The scenario failed\n\n```\n{results['traceback']}\n```\n"
    (out_dir / "report.md").write_text(report)


def write_index(out_root: Path, entries: list[dict[str, Any]], note: str) -> None:
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "index.md").write_text(render_index(entries, note))
    (out_root / "index.json").write_text(
        json.dumps({"schema": SCHEMA, "scenarios": entries}, indent=1)
    )


async def run_many(
    scenarios: Sequence[Scenario],
    out_root: Path,
    *,
    quick: bool,
    progress: Progress,
    lab: LabEnvironment = LOOPBACK,
) -> list[dict[str, Any]]:
    """Run scenarios one after another; write ``index.md`` and ``index.json`` over them."""
    began = datetime.now(tz=UTC).isoformat(timespec="seconds")
    entries = []
    for number, scenario in enumerate(scenarios, start=1):
        progress(f"[{number}/{len(scenarios)}] {scenario.name}: {scenario.purpose}")
        results = await run_scenario(
            scenario, out_root / scenario.name, quick=quick, progress=progress, lab=lab
        )
        if scenario.show_calls:
            for run in results["runs"]:
                for call in run["calls"]:
                    progress(call_summary(call))
        entries.append(index_entry(scenario, results))
        # Rewrite the index after each scenario, so an interrupted run still has one.
        note = (
            f"{'Quick set, s' if quick else 'S'}tarted {began}; {environment(lab)['summary']}. "
            "Each scenario's report.md and results.json are in its own directory."
        )
        write_index(out_root, entries, note)
    return entries
