"""``rtclab lb`` / ``python -m stun_lb``: run the relay until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
from typing import Any

import click

from stun_lb.core.config import (
    ConfigError,
    ForwardMode,
    LoopKind,
    RebindPolicy,
    RelayConfig,
    build_config,
    is_loopback,
    load_file,
)
from wire.addr import format_hostport
from wire.logs import configure as configure_logging
from wire.service import logging_options, run, secret_option, serve_until_signalled

log = logging.getLogger("stun_lb")

_DEFAULTS = RelayConfig()

# Parameters whose value comes from the command line or the environment only
# when the user gave them; otherwise the config file (or the default) applies.
_CONFIG_PARAMS = {
    "listen": "listen",
    "admin": "admin",
    "backends": "backend",
    "secret": "secret",
    "rebind": "rebind",
    "verify_integrity": "verify-integrity",
    "idle_timeout": "idle-timeout",
    "max_flows": "max-flows",
    "loop": "loop",
    "workers": "workers",
    "reuse_port": "reuse-port",
    "state": "state",
    "forward": "forward",
    "internal": "internal",
}


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Example, two media servers on this machine (ids 1 and 2, as in their tokens):
  rtclab lb --backend 1=127.0.0.1 --backend 2=127.0.0.1
  python -m stun_lb --listen 0.0.0.0:3478 --backend 1=10.0.0.11 --backend 2=10.0.0.12 \\
      --secret "$RTCLAB_SECRET" --rebind verified --verify-integrity

\b
Two worker processes on one port, one admin address:
  rtclab lb --workers 2 --listen 127.0.0.1:3478 --backend 1=127.0.0.1

\b
Two independent relays on one port sharing flows through Redis (each needs its
own --admin); kill either and the kernel moves its clients to the other, which
finds their flows in Redis at their first packet:
  rtclab lb --reuse-port --state redis://127.0.0.1:6379/0 --admin 127.0.0.1:9478 \\
      --listen 127.0.0.1:3478 --backend 1=127.0.0.1
  rtclab lb --reuse-port --state redis://127.0.0.1:6379/0 --admin 127.0.0.1:9479 \\
      --listen 127.0.0.1:3478 --backend 1=127.0.0.1
""",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default=format_hostport(_DEFAULTS.listen),
    show_default=True,
    help="The public UDP address: the one ICE candidate every SDP answer names.",
)
@click.option(
    "--admin",
    metavar="HOST:PORT",
    default=format_hostport(_DEFAULTS.admin),
    show_default=True,
    help="HTTP address for GET /healthz, /metrics (Prometheus) and /flows (JSON).",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="ID=HOST",
    help="A media server: ID is the backend id its route tokens carry (0..65535), HOST its "
    "media address (IP or name, resolved once at start).  The session's UDP port comes "
    "from the token.  Repeat for each server; at least one is required.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TOML file with the same keys as these options (listen, admin, backend = "
    '["ID=HOST", ...], secret, rebind, verify-integrity, idle-timeout, max-flows, loop, '
    "workers, reuse-port, state, forward, internal).  "
    "Options given on the command line (or in the environment) win; backends merge by id.",
)
@secret_option
@click.option(
    "--rebind",
    type=click.Choice([p.value for p in RebindPolicy]),
    default=_DEFAULTS.rebind.value,
    show_default=True,
    help="What a STUN check from a NEW address naming a session the relay already has does.  "
    "off: a new flow with a new upstream socket; the backend sees a new peer and its "
    "downstream stays on the old address (the published design).  verified: the check goes "
    "out on the session's existing upstream socket, and the flow moves to the new address "
    "when the backend's Binding success with that transaction id comes back.  ssrc: like "
    "verified, and also moves when an RTP packet from an unknown address carries an SSRC "
    "the session's client sent before; UNAUTHENTICATED (anyone who sees an SSRC can steal "
    "the downstream): lab use only.",
)
@click.option(
    "--verify-integrity/--no-verify-integrity",
    default=_DEFAULTS.verify_integrity,
    show_default=True,
    help="Check a new address's STUN MESSAGE-INTEGRITY with the ICE password derived from "
    "the route token (needs the media servers' --secret) before opening or moving a flow; "
    "failures are dropped as bad_integrity.  Off, the relay reads only USERNAME, as "
    "published.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.001),
    default=_DEFAULTS.idle_timeout_s,
    show_default=True,
    metavar="SECONDS",
    help="Close a flow (and its upstream socket) when its client has sent nothing for this "
    "long.  Default > 6 consent-check intervals of ~5 s.",
)
@click.option(
    "--max-flows",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_flows,
    show_default=True,
    metavar="N",
    help="Bound on the flow table.  When full, NEW flows are refused (dropped as table_full) "
    "and live ones are never evicted, so a flood of new addresses cannot cut calls in "
    "progress; idle flows expiring make room.  Each flow holds one socket: the open-files "
    "limit is raised to fit.",
)
@click.option(
    "--loop",
    type=click.Choice([k.value for k in LoopKind]),
    default=_DEFAULTS.loop.value,
    show_default=True,
    help="Event loop: uvloop (the standard library's loop is used instead where uvloop is "
    "not installed) or asyncio.  The relay reads datagrams the same way on both; uvloop "
    "costs about 10% less CPU per datagram here.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=_DEFAULTS.workers,
    show_default=True,
    metavar="N",
    help="Relay processes sharing the --listen port (SO_REUSEPORT; implies --reuse-port): "
    "the kernel hashes each client address onto one, and each keeps its own flow table "
    "(--max-flows applies to each).  The parent serves --admin: /metrics carries a worker "
    "label, /flows and /healthz list every worker.  A worker that dies is logged and shown "
    "in /healthz (status degraded) but NOT restarted: a new one would rehash the clients of "
    "healthy workers too; the parent exits 1 when none is left.  Needs a fixed port.",
)
@click.option(
    "--reuse-port/--no-reuse-port",
    default=_DEFAULTS.reuse_port,
    show_default=True,
    help="Let other relay processes of the same user bind the same --listen address, so "
    "several independent relays (each with its own --admin) share one public port.  The "
    "kernel hashes each client address onto one of them; when one stops or dies its "
    "clients move to the others, which know them only from --state redis (or from their "
    "next STUN check).  Off, a second relay on the port fails to start.",
)
@click.option(
    "--state",
    metavar="memory|redis://HOST:PORT[/DB]",
    default="memory",
    show_default=True,
    help="Where flows live.  memory: in this process only (the published design); a "
    "relay that never saw a client drops its media as unknown_source until its next STUN "
    "consent check (~5 s).  redis://...: also in Redis, one entry per client address, "
    "written when a flow opens or moves and refreshed while it is active, expiring with "
    "it.  Media from an unknown address is held (a few datagrams per address) while "
    "Redis is asked, off the forwarding path; if found, the flow is opened on the same "
    "upstream address the backend already knows, when it is free, and the held datagrams "
    "go on.  A STUN check that would open a flow asks first too (one Redis round trip per "
    "new call).  Lookups are bounded (too many: lookup_busy; checks then go ahead "
    "unasked) and misses remembered for a second.  If Redis is down, known flows keep "
    "forwarding, new ones open without it, and errors are counted.  "
    "Use Redis when calls must survive a relay dying or restarting: several relays on "
    "one port (--reuse-port, --workers), or one relay restarted in place.  Relays sharing "
    "a Redis must share --secret and backend ids.",
)
@click.option(
    "--forward",
    type=click.Choice([mode.value for mode in ForwardMode]),
    default=_DEFAULTS.forward.value,
    show_default=True,
    help="How datagrams reach the media servers.  nat: from one connected upstream socket "
    "per flow, as they are; a media server's peer is that socket, so a flow rebuilt after a "
    "restart is a new peer.  encap: from ONE internal socket (--internal), each behind a "
    "PROXY protocol v2 header naming the client, so a media server's peer is the client's "
    "own address; the media servers (rtclab media --forward encap --trusted-relay "
    "INTERNAL) answer behind the same header, and each reply goes out of the public port "
    "to the address it names, with no lookup: the downlink keeps no state here.  Headers "
    "are read only on the internal socket and only from backend hosts, never from "
    "clients.  The published design does not say which.",
)
@click.option(
    "--internal",
    metavar="HOST:PORT",
    default=None,
    help="With --forward encap: the address of the socket towards the media servers, which "
    "they must trust (--trusted-relay); unused under nat.  [default: the --listen host, an "
    "ephemeral port]  "
    "Give a fixed port so a restarted relay, or relays sharing it with --reuse-port, are "
    "where the media servers already send their replies.",
)
@logging_options
@click.pass_context
def command(
    ctx: click.Context, config_file: str | None, log_level: str, log_format: str, **options: Any
) -> None:
    """The single-port UDP relay: routes WebRTC sessions to media servers by ICE ufrag.

    Every datagram is classified by its first byte (RFC 7983).  One from a known
    client address is forwarded, opaque, on that client's flow.  A STUN Binding
    request from a new address is parsed: USERNAME is serverUfrag:clientUfrag, and
    the server ufrag is a route token naming the backend id and the session's UDP
    port; the relay opens a connected upstream socket to that backend port and
    records the flow.  Whatever the backend sends on that socket goes back out of
    the public port to the flow's client.  (With --forward encap there is one
    internal socket instead, and a PROXY v2 header on each datagram names the
    client.)  Anything else is dropped and counted by reason (unknown_source,
    bad_token, unknown_backend, malformed, table_full, bad_integrity, not_webrtc,
    ...) in /metrics; nothing is logged per packet.
    """
    configure_logging(log_level, log_format)
    layers: list[dict[str, Any]] = []
    try:
        if config_file is not None:
            layers.append(load_file(config_file))
        given = {
            key: options[param]
            for param, key in _CONFIG_PARAMS.items()
            if ctx.get_parameter_source(param)
            in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
        }
        layers.append(given)
        config = build_config(layers)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if not config.backends:
        raise click.UsageError("no backends: give --backend ID=HOST (or backend in --config)")
    if config.uses_dev_secret and not is_loopback(config.listen[0]):
        log.warning(
            "built-in development secret on a non-loopback address: anyone can mint route "
            "tokens; set --secret or RTCLAB_SECRET"
        )
    try:
        run(_serve(config, log_level, log_format), use_uvloop=config.loop is LoopKind.UVLOOP)
    except OSError as exc:
        raise click.ClickException(f"cannot start the relay: {exc}") from exc
    except RuntimeError as exc:  # WorkersLost
        raise click.ClickException(str(exc)) from exc


async def _serve(config: RelayConfig, log_level: str, log_format: str) -> None:
    host, port = config.admin
    if config.workers == 1:
        from stun_lb.io.admin import create_app

        await serve_until_signalled(create_app(config), host, port)
        return
    from stun_lb.io.workers import WORKERS, WorkersLost, create_supervisor_app

    app = create_supervisor_app(config, log_level, log_format)
    await serve_until_signalled(app, host, port)
    if app[WORKERS].all_dead:
        raise WorkersLost("every worker exited")
