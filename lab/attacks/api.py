"""Schemathesis against signaling's OpenAPI document, on a running stack:
``python -m lab.attacks.api``.

Starts the stack (real subprocesses), then runs ``st run`` on
``/openapi.json`` with every check but ``positive_data_acceptance`` (an SDP
body's validity is not something a JSON Schema can state: a random string is
"valid" to the schema and rightly refused by the server).  Targets: no 5xx
(``not_a_server_error``), every error the documented JSON
(``response_schema_conformance``, ``content_type_conformance``), answers as
the document says.  The summary comes from schemathesis's own JSON report.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import click

from lab.attacks.http_abuse import gauges
from lab.attacks.replay import git_commit
from lab.scenarios.observe import get_text
from lab.stack import Stack, StackConfig

RESULTS = Path(__file__).resolve().parents[2] / "reliability" / "api.json"
EXCLUDED_CHECKS = ("positive_data_acceptance",)
SETUP_TIMEOUT_S = 3.0


def st_binary() -> str:
    return str(Path(sys.executable).with_name("st"))


async def run_schemathesis(
    *, max_examples: int, seed: int = 1, work: Path, max_time_s: float | None = None
) -> dict[str, Any]:
    """One schemathesis run against a fresh stack; its summary as a dict."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    report = work / "schemathesis.json"
    # Example offers create real sessions whose callers never arrive: a short
    # setup timeout lets the run end by checking that every one of them closed.
    config = StackConfig(
        media_servers=1,
        log_dir=work / "logs",
        media_args=("--setup-timeout", str(SETUP_TIMEOUT_S)),
    )
    async with Stack(config) as stack:
        argv = [
            st_binary(),
            "run",
            f"{stack.signaling_url}/openapi.json",
            "--url",
            stack.signaling_url,
            "--checks",
            "all",
            "--exclude-checks",
            ",".join(EXCLUDED_CHECKS),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(max_examples),
            "--seed",
            str(seed),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        if max_time_s is not None:
            argv += ["--max-time", str(int(max_time_s))]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "lab.attacks.st_hooks"}
        with (work / "schemathesis.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env
            )
            exit_code = await process.wait()
        await asyncio.sleep(SETUP_TIMEOUT_S + 2.0)
        async with aiohttp.ClientSession() as http:
            media_metrics = await get_text(http, f"{stack.media_url(0)}/metrics") or ""
    return summarise(json.loads(report.read_text()), exit_code, media_metrics)


def summarise(report: dict[str, Any], exit_code: int, media_metrics: str) -> dict[str, Any]:
    failures = [
        {
            "code": failure.get("code"),
            "title": failure.get("title"),
            "count": failure.get("count"),
            "operations": failure.get("operations"),
        }
        for failure in report.get("failures", [])
    ]
    return {
        "schemathesis": report.get("schemathesis_version"),
        "seed": report.get("seed"),
        "seconds": round(float(report.get("running_time", 0.0)), 1),
        "excluded_checks": list(EXCLUDED_CHECKS),
        "operations_tested": report.get("operations", {}).get("tested"),
        "test_cases": report.get("test_cases", {}).get("generated"),
        "phases": {name: phase.get("status") for name, phase in report.get("phases", {}).items()},
        "failures": failures,
        "server_errors": sum(
            f["count"] or 0 for f in failures if f["code"] in ("ST101", "not_a_server_error")
        ),
        "errors": len(report.get("errors", [])),
        "warnings": {k: len(v) for k, v in report.get("warnings", {}).items() if v},
        "media_sessions_after": gauges(media_metrics).get("sessions"),
        "media_peer_connections_after": gauges(media_metrics).get("peer_connections"),
        "exit_code": exit_code,
        "ok": exit_code == 0 and not failures,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--max-examples", type=click.IntRange(1), default=200, show_default=True,
              help="Test cases per operation and phase.")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS,
    show_default=True,
    help="Where the summary goes.",
)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Schemathesis's own report and log, and the stack's logs "
              "[default: a temp dir].")  # fmt: skip
def main(max_examples: int, seed: int, out: Path, work: Path | None) -> None:
    """Run schemathesis against signaling's OpenAPI document on a running stack."""
    work = work or Path(tempfile.mkdtemp(prefix="rtclab-schemathesis-"))
    summary = asyncio.run(run_schemathesis(max_examples=max_examples, seed=seed, work=work))
    summary.update(
        commit=git_commit(),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        max_examples=max_examples,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    click.echo(
        f"{summary['test_cases']} test cases over {summary['operations_tested']} operations: "
        f"{len(summary['failures'])} failures, {summary['errors']} errors ({work})"
    )
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
