"""``rtclab media`` / ``python -m webrtc_server``: one media server."""

from __future__ import annotations

import logging

import click

from agent.options import agent_options
from agent.turns import AgentConfig
from webrtc_server import aioice_patch
from webrtc_server.config import MediaConfig, Topology
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
    help="IP address every session's UDP socket binds to (one ephemeral port per "
    "session). ICE gathers on this address only.",
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
@agent_options
@logging_options
def command(
    listen: Address,
    backend_id: int,
    bind_host: str,
    topology: str,
    relay: Address,
    secret: str | None,
    setup_timeout_s: float,
    agent: AgentConfig,
    log_level: str,
    log_format: str,
) -> None:
    """A media server ("transceiver"): aiortc peer connections and a synthetic voice agent.

    Each session is one RTCPeerConnection on its own UDP port, with a route-token
    ICE ufrag (backend id + port, signed with the secret) and a derived ICE
    password, answering with a single candidate. The agent answers each caller
    utterance after a model delay and reports events on the `oai-events` data
    channel. Stops cleanly on SIGTERM/SIGINT, closing every session.
    """
    from webrtc_server.app import create_app

    configure_logging(log_level, log_format)
    aioice_patch.install()
    aioice_patch.check_internals()
    config = MediaConfig(
        backend_id=backend_id,
        bind_host=bind_host,
        topology=Topology(topology),
        relay=relay,
        secret=route_token.secret_from_text(secret),
        setup_timeout_s=setup_timeout_s,
        agent=agent,
    )
    log.info(
        "media server starting",
        extra={
            "backend_id": backend_id,
            "bind_host": bind_host,
            "topology": topology,
            "relay": format_hostport(relay) if config.topology is Topology.RELAY else None,
        },
    )

    async def main() -> None:
        await serve_until_signalled(create_app(config), listen[0], listen[1])

    run(main())
