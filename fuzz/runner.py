"""Run fuzz targets one process each and summarise what libFuzzer reports.

A run gives every target either a number of executions (the committed full
run: 1,000,000 each) or a time budget (``--short`` in CI).  Each target's
working corpus starts from its committed seeds and generated ones; a crash (an
exception other than the parser's own error, or a failed property) stops
that target, and its input is kept under the artifacts directory to become a
regression (fuzz/regressions/TARGET/, replayed by tests/fuzz).
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fuzz.target import ROOT, Target

_FINAL = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_PROGRESS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


@dataclass
class TargetResult:
    target: str
    about: str
    executions: int
    seconds: float
    seeds: int
    # libFuzzer's counts at the end: code edges covered, features, corpus units.
    coverage_edges: int
    features: int
    corpus_units: int
    crashes: int
    # The budget it was given: -runs (executions) and the time cap, if any.
    runs_budget: int | None = None
    seconds_budget: float | None = None
    # The first line of what was raised, and where the input was saved.
    findings: list[dict[str, str]] = field(default_factory=list)
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.exit_code == 0


def _write_seeds(target: Target, into: Path) -> int:
    into.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in [p.read_bytes() for p in target.seed_files()] + list(target.generated()):
        digest = hashlib.sha1(data).hexdigest()
        (into / f"seed-{digest}").write_bytes(data)
        count += 1
    return count


def run_target(
    target: Target,
    work: Path,
    *,
    runs: int | None = None,
    seconds: float | None = None,
    seed: int = 1,
) -> TargetResult:
    """Fuzz ``target`` for ``runs`` executions or ``seconds``; working files go in ``work``."""
    corpus = work / "corpus" / target.name
    artifacts = work / "artifacts" / target.name
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds = _write_seeds(target, corpus)
    # Both given: libFuzzer stops at whichever comes first.
    budget = [f"-runs={runs}"] if runs is not None else []
    if seconds is not None:
        budget.append(f"-max_total_time={int(seconds)}")
    argv = [
        sys.executable,
        "-m",
        "fuzz.worker",
        target.name,
        *budget,
        f"-seed={seed}",
        "-print_final_stats=1",
        "-timeout=10",  # seconds per input: a parser looping on input is a finding
        "-rss_limit_mb=2048",
        "-max_len=4096",  # a UDP datagram the relay reads, an offer fragment
        f"-artifact_prefix={artifacts}/",
        str(corpus),
    ]
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order: the exception, then its input
        text=True,
        errors="replace",
    )
    elapsed = time.monotonic() - started
    log = done.stdout
    (work / f"{target.name}.log").write_text(log)
    result = parse_log(target, log, done.returncode, elapsed, seeds)
    result.runs_budget, result.seconds_budget = runs, seconds
    return result


def parse_log(target: Target, log: str, exit_code: int, seconds: float, seeds: int) -> TargetResult:
    """What one worker's libFuzzer output says."""
    progress = _FINAL.findall(log) or _PROGRESS.findall(log)
    executed = _EXECUTED.findall(log)
    last = progress[-1] if progress else ("0", "0", "0", "0")
    findings = []
    for match in re.finditer(r"=== Uncaught Python exception: ===\n(.*)", log):
        artifact = _ARTIFACT.search(log, match.end())
        findings.append(
            {
                "exception": match.group(1).strip(),
                "input": artifact.group(1) if artifact else "",
            }
        )
    done = _DONE.findall(log)
    return TargetResult(
        target=target.name,
        about=target.about,
        executions=int(executed[-1]) if executed else int(last[0]),
        # libFuzzer's own count of fuzzing time when it finished; else the wall clock.
        seconds=float(done[-1][1]) if done else round(seconds, 1),
        seeds=seeds,
        coverage_edges=int(last[1]),
        features=int(last[2]),
        corpus_units=int(last[3]),
        crashes=len(findings) or (1 if exit_code != 0 else 0),
        findings=findings,
        exit_code=exit_code,
    )


def keep_corpus(work: Path, target: Target, into: Path) -> int:
    """Copy the units the run added to its working corpus into ``into``; its file count.

    libFuzzer keeps a unit only for new coverage, so this is the grown corpus less
    the seeds it started from.  (libFuzzer's own -merge re-executes argv[0], which
    for a Python module is not a program.)
    """
    # Added to what earlier runs kept (this run started from those, as seeds).
    into.mkdir(parents=True, exist_ok=True)
    for unit in (work / "corpus" / target.name).iterdir():
        if unit.is_file() and not unit.name.startswith("seed-"):
            shutil.copy(unit, into / unit.name)
    return sum(1 for _ in into.iterdir())


def from_log(target: Target, work: Path) -> TargetResult:
    """A finished worker's result, read back from the log it left in ``work``."""
    log = (work / f"{target.name}.log").read_text()
    seeds = sum(1 for p in (work / "corpus" / target.name).glob("seed-*"))
    failed = "=== Uncaught Python exception" in log or "DONE" not in log
    return parse_log(target, log, 1 if failed else 0, 0.0, seeds)


def merge(previous: dict[str, Any] | None, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the targets of ``previous`` it did not run kept as they were."""
    if not previous:
        return report
    ran = {t["target"] for t in report["targets"]}
    kept = [t for t in previous.get("targets", []) if t["target"] not in ran]
    targets = sorted(kept + report["targets"], key=lambda t: t["target"])
    return {
        **report,
        "targets": targets,
        "total": _total(targets),
        "ok": all(t["crashes"] == 0 and t["exit_code"] == 0 for t in targets),
    }


def _total(targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "targets": len(targets),
        "executions": sum(t["executions"] for t in targets),
        "crashes": sum(t["crashes"] for t in targets),
        "seconds": round(sum(t["seconds"] for t in targets), 1),
        "below_a_million": sorted(t["target"] for t in targets if t["executions"] < 1_000_000),
    }


def summary(results: list[TargetResult], *, mode: str, budget: str) -> dict[str, Any]:
    targets = [asdict(r) for r in results]
    return {
        "schema": 1,
        "mode": mode,
        "budget": budget,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "atheris": metadata.version("atheris"),
            "cpus": _cpus(),
        },
        "targets": targets,
        "total": _total(targets),
        "ok": all(r.ok for r in results),
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
