"""``scripts/compose``: the compose lab, built and run with one command.

``run`` builds the images (from a registry, or here from Debian's packages and
a wheelhouse when none can be pulled), starts the stack, runs the named
scenarios in the caller container -- once per relay policy they compare,
restarting the relay between passes -- merges each scenario's passes into one
report under ``--out``, and stops everything, also when a run fails or the
command is interrupted.  ``build``, ``up``, ``call`` and ``down`` are its steps
one by one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from lab.compose.caller import IMPAIRMENTS
from lab.compose.images import ImageError, Images, cache_root, choose_images
from lab.compose.passes import Pass, plan_passes
from lab.compose.project import (
    ComposeError,
    ComposeProject,
    compose_command,
    daemon_problem,
    lab_net,
    repository,
)
from lab.netns.host import sigterm_as_exit

SERVICES_UP_S = 300.0  # `up --wait` on 2 cores: aiortc imports in four containers at once
DEFAULT_OUT = "reports/compose"


def progress(message: str) -> None:
    click.echo(f"[compose] {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def command() -> None:
    """The compose lab: the stack in containers, the caller moving itself through its own NAT.

    \b
    scripts/compose run ip-change nat-rebind --quick   build, start, run, collect, stop
    scripts/compose up                                  build and start the stack; leave it
    scripts/compose call                                one call from the caller container
    scripts/compose down                                stop it and remove its volumes

    Images come from a registry when one hands them out (python:3.11-slim-bookworm,
    redis, prom/prometheus); else a Debian base is built here with debootstrap and
    the Python packages come from a wheelhouse filled on this machine, both cached
    under ~/.cache/rtclab/compose (RTCLAB_CACHE).  docker-compose.yml's settings
    (RTCLAB_*) are read from the environment; COMPOSE_PROJECT_NAME names the
    project (default rtclab).
    """


images_option = click.option(
    "--images",
    type=click.Choice(["auto", "registry", "local"]),
    default="auto",
    show_default=True,
    envvar="RTCLAB_IMAGES",
    help="Where images come from: a registry, local (a debootstrapped Debian base and a "
    "wheelhouse, built here), auto (the registry when every image can be pulled).",
)


def _lab(images: str, out: Path | None = None, impairment: str | None = None) -> ComposeProject:
    """The project with its images ready and every setting the compose file reads."""
    problem = daemon_problem()
    if problem:
        raise click.ClickException(problem)
    try:
        root = repository()
        command_ = compose_command()
        chosen: Images = choose_images(images, root, progress)
    except (ComposeError, ImageError) as exc:
        raise click.ClickException(str(exc)) from exc
    settings = chosen.environment()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        settings["RTCLAB_REPORTS"] = str(out)
    if impairment is not None:
        settings["RTCLAB_IMPAIRMENT"] = impairment
    project = ComposeProject(
        root, os.environ.get("COMPOSE_PROJECT_NAME") or "rtclab", settings, command_
    )
    settings["RTCLAB_NET"] = lab_net(project.name)
    return project


def _running() -> ComposeProject:
    """The project as it runs (started by ``up``), for commands that only use it."""
    project = ComposeProject.from_environment(repository(), {})
    project.settings["RTCLAB_NET"] = lab_net(project.name)
    return project


def _build(project: ComposeProject) -> None:
    progress(f"building the rtclab image ({project.settings['RTCLAB_BASE_IMAGE']})")
    project.run("--profile", "caller", "build", "--quiet")


def _up(project: ComposeProject, extra: dict[str, str] | None = None) -> None:
    project.run("up", "-d", "--wait", "--no-build", extra=extra, timeout_s=SERVICES_UP_S)


def _down(project: ComposeProject) -> None:
    progress("stopping the stack (docker compose down -v)")
    project.run(
        "--profile", "caller", "down", "-v", "--remove-orphans", "--timeout", "10", check=False
    )


@contextmanager
def _stopping(project: ComposeProject, keep: bool) -> Iterator[None]:
    """Whatever happens inside (failure, Ctrl-C, SIGTERM), the stack is taken down after."""
    with sigterm_as_exit():
        try:
            yield
        finally:
            if not keep:
                _down(project)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@command.command()
def check() -> None:
    """Say whether the compose lab can run here: daemon, Compose, where images would come from.

    Prints one JSON object; exit status 1 if it cannot run.
    """
    daemon = daemon_problem()
    found: dict[str, Any] = {"daemon": daemon or "ok", "cache": str(cache_root())}
    try:
        found["compose"] = " ".join(compose_command())
        compose_ok = True
    except ComposeError as exc:
        found["compose"], compose_ok = str(exc), False
    found["usable"] = daemon is None and compose_ok
    click.echo(json.dumps(found))
    sys.exit(0 if found["usable"] else 1)


@command.command()
@images_option
def build(images: str) -> None:
    """Make the images: the base and wheelhouse if need be (cached), then the rtclab image."""
    project = _lab(images)
    try:
        _build(project)
    except ComposeError as exc:
        raise _fail(exc) from exc


@command.command()
@images_option
def up(images: str) -> None:
    """Build, then start the stack and wait until every service is healthy; leave it running."""
    project = _lab(images)
    try:
        _build(project)
        _up(project)
    except ComposeError as exc:
        raise _fail(exc) from exc
    ports = {
        "relay (udp)": project.published("relay", 3478, "udp"),
        "relay admin": project.published("relay", 9478),
        "signaling": project.published("signaling", 8080),
        "prometheus": project.published("prometheus", 9090),
    }
    click.echo(json.dumps({"project": project.name, "published": ports}))


@command.command()
@click.option("--seconds", type=click.FloatRange(1.0, 600.0), default=4.0, show_default=True)
def call(seconds: float) -> None:
    """One call from the caller container; print it with the relay's flows and media's peers."""
    project = _running()
    argv = ["run", "--rm", "-T", "--no-deps", "caller", "python", "-m", "lab.compose.probe"]
    done = project.run(*argv, "--seconds", str(seconds), capture=True, check=False)
    click.echo(done.stdout.strip())
    if done.returncode != 0:
        raise click.ClickException(f"the call failed: {done.stderr.strip()[-500:]}")


@command.command()
def down() -> None:
    """Stop the stack and remove its containers, network and volumes."""
    _down(_running())


@command.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for the reports: one per scenario, each pass's own under passes/.",
)
@click.option("--quick", is_flag=True, help="Shorter calls and fewer levels: the set CI runs.")
@click.option(
    "--impairment",
    type=click.Choice(IMPAIRMENTS),
    default="auto",
    show_default=True,
    help="How the caller impairs its link: netem (tc on its interface; needs sch_netem), "
    "emulator (the user-space emulator in the caller container, its traffic redirected "
    "through it), none, auto (netem if the kernel has it, else emulator).",
)
@click.option("--keep", is_flag=True, help="Leave the stack running afterwards.")
@images_option
def run(
    names: tuple[str, ...], out_dir: str, quick: bool, impairment: str, keep: bool, images: str
) -> None:
    """Build, start, run scenarios NAMES (or `all`) in the caller container, merge, stop.

    A scenario that compares relay policies runs once per policy (a pass), the
    relay restarted with it in between; the passes' results are merged into one
    report per scenario.  Exit status 1 if a scenario could not run.
    """
    from lab.scenarios.catalogue import choose
    from lab.scenarios.report import index_entry, merge_passes, write_index

    try:
        scenarios = choose(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    out = Path(out_dir).resolve()
    project = _lab(images, out, impairment)
    owner = f"{os.getuid()}:{os.getgid()}"
    began = time.monotonic()
    done: list[tuple[Pass, list[str]]] = []
    try:
        with _stopping(project, keep):
            _build(project)
            passes = plan_passes(scenarios, quick, project.caller_services())
            for number, (pass_, chosen) in enumerate(passes, start=1):
                extra = pass_.environment()
                labels = [s.name for s in chosen]
                progress(f"pass {number}/{len(passes)} ({pass_.label}): {', '.join(labels)}")
                _up(project, extra)
                inside = [
                    "rtclab",
                    "scenario",
                    "run",
                    *labels,
                    "--lab",
                    "compose",
                    "--out",
                    f"/reports/passes/{pass_.slug}",
                    *(["--quick"] if quick else []),
                ]
                project.run(*project.caller_argv(inside, owner), extra=extra, check=False)
                done.append((pass_, labels))
    except ComposeError as exc:
        raise _fail(exc) from exc
    entries = []
    for scenario in scenarios:
        parts = {}
        for pass_, labels in done:
            path = out / "passes" / pass_.slug / scenario.name / "results.json"
            if scenario.name in labels and path.is_file():
                parts[pass_.label] = json.loads(path.read_text())
        if not parts:
            continue
        merged = merge_passes(scenario, parts, out / scenario.name)
        entries.append(index_entry(scenario, merged))
    if entries:
        note = (
            f"{'Quick set' if quick else 'Full set'} in the compose lab, "
            f"{time.monotonic() - began:.0f} s; each scenario's report.md and results.json "
            "are in its own directory, each pass's own under passes/."
        )
        write_index(out, entries, note)
    failed = len(entries) < len(scenarios) or any(entry["error"] for entry in entries)
    for entry in entries:
        verdicts = [f["verdict"] for f in entry["findings"]]
        summary = entry["error"] or ", ".join(
            f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))
        )
        click.echo(f"{entry['scenario']:<15} {entry['duration_s']:6.0f}s  {summary}", err=True)
    click.echo(f"reports: {out / 'index.md'}", err=True)
    sys.exit(1 if failed else 0)
