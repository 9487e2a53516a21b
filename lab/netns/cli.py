"""``rtclab lab --netns``: the scenarios in network namespaces, callers behind a real NAT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from lab.netns.host import (
    CommandError,
    Topology,
    choose_impairment,
    cleanup_stale,
    die_with_parent,
    probe,
    sigterm_as_exit,
)
from lab.netns.plan import Plan
from wire.logs import configure as configure_logging
from wire.service import logging_options

INSIDE_GRACE_S = 30.0  # the runner stops its stacks on SIGTERM; give it time to


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--netns",
    is_flag=True,
    help="The namespace lab (root): the stack, a NAT router and the callers in three "
    "network namespaces joined by veth pairs.",
)
def command(netns: bool) -> None:
    """Run the lab on a real network instead of loopback.

    \b
    --netns: network namespaces on this machine (root, Linux): the stack in one,
    a router doing nftables masquerade in the next, the scenario runner's callers
    behind it in a third.  A rebind flushes the router's conntrack mapping (new
    port) or moves its public address; impairment is tc netem on the router when
    the kernel has netem, else the user-space emulator running on the router.
    Namespaces, links and rules are always removed afterwards.

    \b
    The compose lab has its own command: `scripts/compose ip-change` (see
    docs/labs.md).
    """
    if not netns:
        raise click.UsageError(
            "choose the lab: --netns (the compose lab runs with scripts/compose; see docs/labs.md)"
        )


@command.command()
def check() -> None:
    """Say whether the namespace lab can run here and which impairment it would use.

    Prints one JSON object (root, missing tools, netns, netem); exit status 1 if
    the lab cannot run.
    """
    capabilities = probe()
    reason = capabilities.unusable()
    report = {**capabilities.describe(), "usable": reason is None, "reason": reason}
    if reason is None:
        report["impairment"] = choose_impairment("auto", capabilities).value
    click.echo(json.dumps(report))
    sys.exit(0 if reason is None else 1)


@command.command()
def cleanup() -> None:
    """Remove lab namespaces left by runs that were killed (their creator is gone)."""
    for name in cleanup_stale():
        click.echo(f"removed {name}")


@command.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports-netns",
    show_default=True,
    help="Directory for the reports (one subdirectory each).",
)
@click.option("--quick", is_flag=True, help="Shorter calls and fewer levels: the set CI runs.")
@click.option(
    "--impairment",
    type=click.Choice(["auto", "netem", "emulator", "none"]),
    default="auto",
    show_default=True,
    help="How impair steps act: netem (tc on the router; needs sch_netem), emulator "
    "(the user-space emulator on the router, each run's traffic redirected through "
    "it), none (the bare kernel path; impair steps fail), auto (netem if the kernel "
    "has it, else emulator).",
)
@logging_options
def run(
    names: tuple[str, ...],
    out_dir: str,
    quick: bool,
    impairment: str,
    log_level: str,
    log_format: str,
) -> None:
    """Build the namespaces, run scenarios NAMES (or `all`) in them, remove them.

    The scenario runner runs inside the caller namespace; each run's stack in
    the server namespace.  Reports as `rtclab scenario run` writes them.  Exit
    status: the runner's (1 if a scenario could not run), 2 if the lab could
    not be built.
    """
    configure_logging("WARNING" if log_level.upper() == "INFO" else log_level, log_format)
    capabilities = probe()
    reason = capabilities.unusable()
    if reason:
        raise click.ClickException(reason)
    try:
        chosen = choose_impairment(impairment, capabilities)
    except CommandError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in cleanup_stale():
        click.echo(f"removed a namespace left by an earlier run: {name}", err=True)
    plan = Plan.new(chosen)
    # The same `rtclab scenario run`, inside the caller namespace, told which lab it is in.
    inside = [
        sys.executable,
        "-m",
        "lab",
        "scenario",
        "run",
        *names,
        "--lab",
        "netns",
        "--out",
        str(Path(out_dir).resolve()),
        "--log-level",
        log_level,
        "--log-format",
        log_format,
        *(["--quick"] if quick else []),
    ]
    env = {**os.environ, "RTCLAB_NETNS": plan.to_json()}
    click.echo(f"namespace lab {plan.run_id}: impairment by {chosen.value}", err=True)
    with sigterm_as_exit(), Topology(plan) as topology:
        # The runner dies with us even on SIGKILL (its stacks die with it in turn), so a
        # killed lab leaves only empty namespaces for the next run's cleanup.
        child = subprocess.Popen(
            topology.exec_argv("caller", inside), env=env, preexec_fn=die_with_parent
        )
        try:
            code = child.wait()
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(INSIDE_GRACE_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
    sys.exit(code)
