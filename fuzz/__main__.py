"""``python -m fuzz``: run the fuzz targets (``scripts/fuzz`` is the usual way in)."""

from __future__ import annotations

import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from fuzz.runner import TargetResult, from_log, keep_corpus, merge, run_target, summary
from fuzz.target import ROOT, load, names

FULL_RUNS = 1_000_000
SHORT_TOTAL_S = 30


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1)
@click.option(
    "--short",
    is_flag=True,
    help=f"About {SHORT_TOTAL_S} s in all, split over the targets (what CI runs).",
)
@click.option(
    "--runs",
    type=click.IntRange(1),
    default=FULL_RUNS,
    show_default=True,
    help="Executions per target (ignored with --short or --seconds).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1),
    help="A time budget per target: instead of --runs, or with --runs a cap (whichever "
    "comes first).",
)
@click.option("--runs-and-seconds", "capped", is_flag=True,
              help="Keep --runs as the budget and --seconds as a cap on it.")  # fmt: skip
@click.option(
    "--merge",
    "merge_out",
    is_flag=True,
    help="Keep the entries of --out for targets this run does not fuzz.",
)
@click.option(
    "--from-logs",
    is_flag=True,
    help="Fuzz nothing: read each TARGET's result from the log a run left in --work.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Targets fuzzed at once (each is one process, one core).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the summary JSON here (the committed full run: reliability/fuzz.json).",
)
@click.option(
    "--keep-corpus",
    is_flag=True,
    help="Copy what each run added to its corpus into fuzz/corpus/kept/TARGET (committed).",
)
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where working corpora, logs and crash inputs go [default: a temp dir].",
)
@click.option("--list", "list_only", is_flag=True, help="List the targets and exit.")
def main(
    targets: tuple[str, ...],
    short: bool,
    runs: int,
    seconds: float | None,
    jobs: int,
    out: Path | None,
    keep_corpus: bool,
    work: Path | None,
    list_only: bool,
    capped: bool,
    merge_out: bool,
    from_logs: bool,
) -> None:
    """Coverage-guided fuzzing of every parser that reads network input.

    Each TARGET (default: all) runs in its own process under atheris
    (libFuzzer), starting from its committed seeds.  A finding is any
    exception other than the parser's own error, or a failed property; the
    input is saved and the command exits 1.  Exits 0 when every target ran
    clean.
    """
    chosen = list(targets) or names()
    loaded = [load(name) for name in chosen]
    if list_only:
        for target in loaded:
            click.echo(f"{target.name:<12} {target.about}")
        return
    if short:
        # Less a second each for the worker's start (imports, seeds).
        seconds = max(2.0, SHORT_TOTAL_S / len(loaded) * jobs - 1)
    mode = "short" if short else ("timed" if seconds and not capped else "full")
    budget = f"{seconds:.0f} s per target" if seconds else f"{runs:,} executions per target"
    if capped and seconds:
        budget = f"{runs:,} executions per target, capped at {seconds:.0f} s"
    workdir = work or Path(tempfile.mkdtemp(prefix="rtclab-fuzz-"))
    click.echo(f"fuzzing {len(loaded)} targets, {budget}; work in {workdir}", err=True)

    def one(name: str) -> TargetResult:
        target = load(name)
        if from_logs:
            result = from_log(target, workdir)
        else:
            result = run_target(
                target,
                workdir,
                runs=runs if capped or not seconds else None,
                seconds=seconds,
            )
        click.echo(_line(result), err=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, chosen))
    report = summary(results, mode=mode, budget=budget)
    if merge_out and out is not None and out.exists():
        report = merge(json.loads(out.read_text()), report)
    if keep_corpus:
        for target in loaded:
            kept = keep_corpus_into(target.name, workdir)
            click.echo(f"{target.name}: kept {kept} corpus files", err=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    total = report["total"]
    click.echo(
        f"{total['targets']} targets, {total['executions']:,} executions, "
        f"{total['crashes']} crashes in {total['seconds']:.0f} s"
    )
    sys.exit(0 if report["ok"] else 1)


def keep_corpus_into(name: str, workdir: Path) -> int:
    return keep_corpus(workdir, load(name), ROOT / "fuzz" / "corpus" / "kept" / name)


def _line(result: TargetResult) -> str:
    status = (
        "ok"
        if result.ok
        else f"{result.crashes} crash(es): "
        + "; ".join(f"{f['exception']} -> {f['input']}" for f in result.findings)
    )
    rate = result.executions / result.seconds if result.seconds else 0
    return (
        f"{result.target:<12} {result.executions:>10,} execs in {result.seconds:>6.1f} s "
        f"({rate:,.0f}/s), cov {result.coverage_edges}, ft {result.features}, "
        f"corpus {result.corpus_units}: {status}"
    )


if __name__ == "__main__":
    main()
