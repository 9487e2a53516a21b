"""The ``rtclab`` command: every part of the lab from one entry point."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import click

from wire import route_token
from wire.logs import configure as configure_logging
from wire.service import logging_options, secret_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="rtclab")
def main() -> None:
    """rtclab: a lab for real-time voice transport.

    It runs the WebRTC design large voice-AI services publish (HTTP signaling,
    media servers that terminate every session, a UDP relay on one port that
    routes by ICE ufrag) on loopback, and measures its failure modes.

    \b
    Start here:
      rtclab up                      the whole stack, until Ctrl-C
      rtclab call --signaling URL    one synthetic voice call, its measured result
      rtclab scenario list           the scripted failure scenarios
    """


# --- rtclab up ----------------------------------------------------------------


@main.command()
@click.option(
    "--media-servers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="How many media servers (aiortc transceivers) to start.",
)
@click.option(
    "--rebind",
    type=click.Choice(["off", "verified", "ssrc"]),
    default="off",
    show_default=True,
    help="Relay policy when a known session's STUN arrives from a new address "
    "(see `rtclab lb --help`).",
)
@click.option(
    "--topology",
    type=click.Choice(["relay", "direct"]),
    default="relay",
    show_default=True,
    help="relay: callers reach media servers only through the one-port relay. "
    "direct: callers reach each media server's socket (no relay process).",
)
@click.option(
    "--forward",
    type=click.Choice(["nat", "encap"]),
    default="nat",
    show_default=True,
    help="How the relay passes datagrams to media servers: nat (a connected socket per "
    "flow: the media server sees the relay) or encap (one internal socket, a PROXY v2 "
    "header naming the client: the media server sees the caller). See `rtclab lb --help`.",
)
@click.option(
    "--media-socket",
    type=click.Choice(["shared", "per-session"]),
    default="shared",
    show_default=True,
    help="shared: ONE UDP socket per media server for all its sessions (the published "
    "design); per-session: a UDP port per session.",
)
@click.option(
    "--free-ports",
    is_flag=True,
    help="Pick free ports instead of the well-known 8080 (signaling), 3478 (relay), "
    "9478 (relay admin), 3479 (the relay's internal socket under --forward encap), "
    "8101.. (media servers' HTTP).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where each part writes its log. [default: a new temporary directory]",
)
@click.option(
    "--media-arg",
    "media_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for every media server, e.g. --media-arg=--response-seconds=3.",
)
@click.option(
    "--relay-arg",
    "relay_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for the relay, e.g. --relay-arg=--verify-integrity.",
)
@logging_options
def up(
    media_servers: int,
    rebind: str,
    topology: str,
    forward: str,
    media_socket: str,
    free_ports: bool,
    log_dir: str | None,
    media_args: tuple[str, ...],
    relay_args: tuple[str, ...],
    log_level: str,
    log_format: str,
) -> None:
    """Start the whole stack on loopback and run until SIGINT/SIGTERM.

    Prints ONE JSON line with the endpoints once every part is healthy (signaling
    URL, offer URL, relay address, relay admin URL, media servers, log directory),
    then stops every child on the way out.  By default it is the published shape:
    one public relay port, one UDP socket per media server.
    """
    from pathlib import Path

    from lab.stack import Stack, StackConfig

    configure_logging(log_level, log_format)
    options: dict[str, Any] = {
        "media_servers": media_servers,
        "rebind": rebind,
        "topology": topology,
        "forward": forward,
        "media_socket": media_socket,
        "log_dir": Path(log_dir) if log_dir else None,
        "log_level": log_level,
        "media_args": media_args,
        "relay_args": relay_args,
    }
    config = StackConfig(**options) if free_ports else StackConfig.fixed_ports(**options)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Stack(config) as stack:
            click.echo(json.dumps(stack.endpoints()), nl=True)
            sys.stdout.flush()
            await stop.wait()

    asyncio.run(run())


# --- rtclab call --------------------------------------------------------------


@main.command()
@click.option(
    "--signaling",
    "signaling_url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Base URL of the signaling service (the caller POSTs to URL/v1/calls).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1.0, 3600.0),
    default=8.0,
    show_default=True,
    help="How long the call lasts.",
)
@click.option(
    "--bind-host",
    default="127.0.0.1",
    show_default=True,
    envvar="RTCLAB_BIND_HOST",
    help="The address the caller's ICE gathers on; `auto`: the one this machine sends "
    "from towards signaling (in a container: its own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the call result as one JSON object.")
@logging_options
def call(
    signaling_url: str,
    seconds: float,
    bind_host: str,
    as_json: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Make one synthetic voice call and print its measured result.

    The caller is a real aiortc peer: it speaks speech-like utterances with
    pauses, hears the agent answer, and measures setup time per phase, loss and
    largest gap in each direction, and turn latency.  Exit status 1 if the call
    failed.
    """
    from lab.callers.aiortc_caller import run_call
    from lab.report.text import call_summary

    configure_logging("WARNING" if log_level.upper() == "INFO" else log_level, log_format)
    if bind_host == "auto":
        from urllib.parse import urlsplit

        from lab.stack import source_address_towards

        where = urlsplit(signaling_url)
        bind_host = source_address_towards(where.hostname or "127.0.0.1", where.port or 80)
    offer_url = f"{signaling_url.rstrip('/')}/v1/calls"
    result = asyncio.run(run_call(offer_url, seconds=seconds, bind_host=bind_host))
    click.echo(json.dumps(result) if as_json else call_summary(result))
    sys.exit(0 if result.get("ok") else 1)


# --- rtclab scenario ----------------------------------------------------------


@main.group()
def scenario() -> None:
    """Scripted failure scenarios: each starts its own stack, runs a timeline, reports.

    Every scenario writes results.json (the record), report.md (rendered from it,
    ending in a table claim | expected | observed | verdict) and PNG plots.
    """


@scenario.command("list")
def scenario_list() -> None:
    """Print every scenario with its one-line purpose."""
    from lab.scenarios.catalogue import SCENARIOS

    width = max(len(s.name) for s in SCENARIOS)
    for item in SCENARIOS:
        click.echo(f"{item.name:<{width}}  {item.purpose}")


@scenario.command("run")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="Directory for the reports (one subdirectory each).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Shorter calls and fewer levels: the set CI runs (a few minutes for all).",
)
@click.option(
    "--lab",
    "lab_name",
    type=click.Choice(["loopback", "netns", "compose"]),
    default="loopback",
    show_default=True,
    envvar="RTCLAB_LAB",
    help="Where the runs happen: loopback (stacks started here), netns (inside "
    "`rtclab lab --netns`, which sets this), compose (the caller container of "
    "docker-compose.yml, which sets this).",
)
@click.option(
    "--client",
    default="aiortc",
    show_default=True,
    help="Who calls: a client from lab.callers.drivers (aiortc, chromium, node-wrtc, ...). "
    "Only ip-change and nat-rebind take another; their reports go to NAME-CLIENT.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Draw the random phases of the moves in ip-change, nat-rebind and interop from "
    "this seed instead of the default (each results.json records the seed it used).",
)
@logging_options
def scenario_run(
    names: tuple[str, ...],
    out_dir: str,
    quick: bool,
    lab_name: str,
    client: str,
    seed: int | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run scenarios NAMES (or `all`) and write their reports under --out.

    A `refuted` verdict is a finding, not a failure: the exit status is 1 only
    if a scenario could not run.
    """
    from pathlib import Path

    from rich.console import Console

    from lab.netns.select import lab_environment
    from lab.scenarios.catalogue import choose, with_seed
    from lab.scenarios.report import run_many

    configure_logging("WARNING" if log_level.upper() == "INFO" else log_level, log_format)
    try:
        chosen = choose(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if seed is not None:
        chosen = [with_seed(item, seed) for item in chosen]
    if client != "aiortc":
        from lab.callers.drivers import driver
        from lab.scenarios.catalogue.mobility import with_client

        try:
            reason = driver(client).unavailable()
            chosen = [with_client(item, client) for item in chosen]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--client") from exc
        if reason:
            raise click.UsageError(f"client {client} cannot run here: {reason}")
    console = Console(stderr=True)
    began = time.monotonic()

    def progress(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - began:6.1f}s[/dim] {message}")

    lab = lab_environment(lab_name)
    try:
        entries = asyncio.run(
            run_many(chosen, Path(out_dir), quick=quick, progress=progress, lab=lab)
        )
    finally:
        lab.close()
    failed = False
    for entry in entries:
        verdicts = [f["verdict"] for f in entry["findings"]]
        failed |= bool(entry["error"])
        summary = entry["error"] or ", ".join(
            f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))
        )
        console.print(f"{entry['scenario']:<15} {entry['duration_s']:6.0f}s  {summary}")
    console.print(f"reports: {Path(out_dir) / 'index.md'}")
    sys.exit(1 if failed else 0)


# --- rtclab token -------------------------------------------------------------


@main.group()
def token() -> None:
    """Encode or decode route tokens (server ICE ufrags), e.g. from a capture."""


@token.command("encode")
@click.option(
    "--backend",
    "backend_id",
    type=click.IntRange(0, 0xFFFF),
    required=True,
    help="Backend id the relay maps to a media server host.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 0xFFFF),
    required=True,
    help="The UDP port the session listens on: its media server's shared socket, or "
    "the session's own (--media-socket per-session).",
)
@secret_option
def token_encode(backend_id: int, port: int, secret: str | None) -> None:
    """Print a fresh token for BACKEND and PORT, with its ICE password, as JSON."""
    key = route_token.secret_from_text(secret)
    ufrag = route_token.encode(key, backend_id, port)
    click.echo(
        json.dumps(
            {
                "ufrag": ufrag,
                "ice_password": route_token.ice_password(key, ufrag),
                "backend_id": backend_id,
                "port": port,
            }
        )
    )


@token.command("decode")
@click.argument("ufrag")
@secret_option
def token_decode(ufrag: str, secret: str | None) -> None:
    """Check UFRAG (or a whole `server:client` USERNAME) and print its fields as JSON."""
    key = route_token.secret_from_text(secret)
    server_ufrag = route_token.server_ufrag(ufrag)
    try:
        decoded = route_token.decode(key, server_ufrag)
    except route_token.TokenError as exc:
        click.echo(json.dumps({"ufrag": server_ufrag, "valid": False, "error": str(exc)}))
        sys.exit(1)
    click.echo(
        json.dumps(
            {
                "ufrag": server_ufrag,
                "valid": True,
                "version": decoded.version,
                "backend_id": decoded.backend_id,
                "port": decoded.port,
                "nonce": decoded.nonce,
                "ice_password": route_token.ice_password(key, server_ufrag),
            }
        )
    )


def _register_servers() -> None:
    # Each server owns its command; the lab only gathers them under one name.
    from lab.netem.cli import command as netem_command
    from lab.netns.cli import command as lab_command
    from signaling.cli import command as signaling_command
    from stun_lb.cli import command as lb_command
    from webrtc_server.cli import command as media_command

    main.add_command(lb_command, "lb")
    main.add_command(media_command, "media")
    main.add_command(signaling_command, "signaling")
    main.add_command(netem_command, "netem")
    main.add_command(lab_command, "lab")


_register_servers()
