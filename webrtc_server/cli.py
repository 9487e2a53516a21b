"""``rtclab media`` / ``python -m webrtc_server``: one media server."""

from __future__ import annotations

import ipaddress
import logging

import click

from agent.options import agent_options
from agent.turns import AgentConfig
from webrtc_server import aioice_patch
from webrtc_server.config import Forward, MediaConfig, MediaSocketMode, Topology
from wire import route_token
from wire.addr import Address, format_hostport, parse_hostport
from wire.logs import configure as configure_logging
from wire.service import logging_options, run, secret_option, serve_until_signalled

log = logging.getLogger("rtclab.media")

_DEFAULTS = MediaConfig()


def _hostport(default_port: int | None) -> click.ParamType:
    class HostPort(click.ParamType):
        name = "HOST:PORT"

        def convert(self, value: object, param: object, ctx: object) -> Address:
            if isinstance(value, tuple):
                return value
            try:
                return parse_hostport(str(value), default_port)
            except ValueError as exc:
                self.fail(str(exc))

    return HostPort()


def _trusted_relay(text: str) -> str | Address:
    """``HOST`` (any port of it) or ``HOST:PORT``, HOST an IP literal ([v6]:port for IPv6)."""
    text = text.strip()
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        return text.strip("[]")
    try:
        host, port = parse_hostport(text)
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not HOST or HOST:PORT with HOST an IP address",
            param_hint="--trusted-relay",
        ) from exc
    return host, port


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--listen",
    type=_hostport(None),
    default="127.0.0.1:8101",
    show_default=True,
    help="Where the internal HTTP API listens (POST /sessions, /healthz, /metrics).",
)
@click.option(
    "--backend-id",
    type=click.IntRange(0, 0xFFFF),
    default=_DEFAULTS.backend_id,
    show_default=True,
    help="This server's id inside every route token; the relay maps it to this host.",
)
@click.option(
    "--bind-host",
    default=_DEFAULTS.bind_host,
    show_default=True,
    help="IP address the media sockets bind to (the shared socket, or one ephemeral port "
    "per session). ICE gathers on this address only.",
)
@click.option(
    "--media-socket",
    type=click.Choice([m.value for m in MediaSocketMode]),
    default=_DEFAULTS.media_socket.value,
    show_default=True,
    help="shared: ONE UDP socket (--media-port) carries every session, as the published "
    "design has it; datagrams go to a session by their remote address, or by the local "
    "ufrag of a STUN Binding request from a new address, else they are dropped and counted "
    "(/metrics rtclab_media_socket_drops). per-session: each session binds its own "
    "ephemeral port. Either way the route token names the port the session listens on.",
)
@click.option(
    "--media-port",
    type=click.IntRange(0, 0xFFFF),
    default=_DEFAULTS.media_port,
    show_default=True,
    help="The shared socket's UDP port (0: the kernel picks one; tokens carry it, so the "
    "relay needs no setting). The relay must reach BIND-HOST on this port. Unused with "
    "--media-socket per-session.",
)
@click.option(
    "--forward",
    type=click.Choice([f.value for f in Forward]),
    default=_DEFAULTS.forward.value,
    show_default=True,
    help="How the relay in front forwards (it must match the relay's --forward). nat: "
    "datagrams arrive from the relay's socket of each flow, as sent. encap: each arrives "
    "from the relay's internal socket behind a PROXY protocol v2 header naming the client, "
    "which this server strips, so ICE sees the client's own address; replies carry the "
    "same header back. Needs --trusted-relay.",
)
@click.option(
    "--trusted-relay",
    "trusted_relays",
    multiple=True,
    metavar="HOST[:PORT]",
    help="With --forward encap: a relay address whose PROXY headers are believed (an IP "
    "address, and optionally the port its --internal socket sends from). Repeat for each "
    "relay. Datagrams from anywhere else are dropped (untrusted_relay), as are datagrams "
    "without a valid header: a header believed from anyone would let them speak as any "
    "client. Unused under --forward nat.",
)
@click.option(
    "--topology",
    type=click.Choice([t.value for t in Topology]),
    default=_DEFAULTS.topology.value,
    show_default=True,
    help="relay: the answer's only candidate is the relay's address (--relay). "
    "direct: it is the session's own socket, BIND-HOST:PORT.",
)
@click.option(
    "--relay",
    type=_hostport(3478),
    default=format_hostport(_DEFAULTS.relay),
    show_default=True,
    help="The relay's public UDP address, advertised to callers in relay topology.",
)
@secret_option
@click.option(
    "--setup-timeout",
    "setup_timeout_s",
    type=click.FloatRange(min=0.1),
    default=_DEFAULTS.setup_timeout_s,
    show_default=True,
    help="SECONDS after the offer within which the caller must connect (ICE and DTLS); "
    "the session is closed otherwise.",
)
@click.option(
    "--max-pending-setups",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_pending_setups,
    show_default=True,
    help="Sessions answered but not yet connected, at most; further offers get 503 "
    "(too_many_pending_setups, with Retry-After) until a caller connects or times out.",
)
@agent_options
@logging_options
def command(
    listen: Address,
    backend_id: int,
    bind_host: str,
    media_socket: str,
    media_port: int,
    forward: str,
    trusted_relays: tuple[str, ...],
    topology: str,
    relay: Address,
    secret: str | None,
    setup_timeout_s: float,
    max_pending_setups: int,
    agent: AgentConfig,
    log_level: str,
    log_format: str,
) -> None:
    """A media server ("transceiver"): aiortc peer connections and a synthetic voice agent.

    Each session is one RTCPeerConnection, reached on the server's one shared UDP
    socket (or its own port, with --media-socket per-session), with a route-token
    ICE ufrag (backend id + that port, signed with the secret) and a derived ICE
    password, answering with a single candidate. The agent answers each caller
    utterance after a model delay and reports events on the `oai-events` data
    channel. Stops cleanly on SIGTERM/SIGINT, closing every session.
    """
    from webrtc_server.app import create_app

    trusted = tuple(_trusted_relay(text) for text in trusted_relays)
    if forward == Forward.ENCAP.value:
        if not trusted:
            raise click.UsageError("--forward encap needs --trusted-relay (the relay's address)")
        if topology != Topology.RELAY.value:
            raise click.UsageError("--forward encap needs a relay in front: --topology relay")
    configure_logging(log_level, log_format)
    aioice_patch.install()
    aioice_patch.check_internals()
    config = MediaConfig(
        backend_id=backend_id,
        bind_host=bind_host,
        media_socket=MediaSocketMode(media_socket),
        media_port=media_port,
        forward=Forward(forward),
        trusted_relays=trusted,
        topology=Topology(topology),
        relay=relay,
        secret=route_token.secret_from_text(secret),
        setup_timeout_s=setup_timeout_s,
        max_pending_setups=max_pending_setups,
        agent=agent,
    )
    log.info(
        "media server starting",
        extra={
            "backend_id": backend_id,
            "bind_host": bind_host,
            "media_socket": media_socket,
            "forward": forward,
            "trusted_relays": list(trusted_relays),
            "topology": topology,
            "relay": format_hostport(relay) if config.topology is Topology.RELAY else None,
        },
    )

    async def main() -> None:
        await serve_until_signalled(create_app(config), listen[0], listen[1])

    run(main())
