"""``rtclab signaling``: the public HTTP API in front of the media servers."""

from __future__ import annotations

import logging

import click

from signaling.app import create_app
from signaling.config import SignalingConfig
from wire import logs
from wire.addr import format_hostport, parse_hostport
from wire.service import logging_options, run, serve_until_signalled

log = logging.getLogger("rtclab.signaling")

DEFAULTS = SignalingConfig(media_urls=())


def _listen(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _media_url(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    urls = tuple(url.rstrip("/") for url in value)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http:// or https:// URL")
    if len(set(urls)) != len(urls):
        raise click.BadParameter("each media server may be given only once")
    return urls


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Address the public API listens on ([v6]:PORT for IPv6).",
)
@click.option(
    "--media",
    "media_urls",
    multiple=True,
    required=True,
    callback=_media_url,
    metavar="URL",
    help="Base URL of a media server's internal API, e.g. http://127.0.0.1:8101. "
    "Repeat for each media server; the order breaks placement ties.",
)
@click.option(
    "--health-interval",
    type=click.FloatRange(min=0.01),
    default=DEFAULTS.health_interval_s,
    show_default=True,
    metavar="SECONDS",
    help="Time between health polls of every media server (GET /healthz).",
)
@click.option(
    "--health-timeout",
    type=click.FloatRange(min=0.01),
    default=DEFAULTS.health_timeout_s,
    show_default=True,
    metavar="SECONDS",
    help="Time a health poll may take before it counts as failed.",
)
@click.option(
    "--unhealthy-after",
    type=click.IntRange(min=1),
    default=DEFAULTS.unhealthy_after_failures,
    show_default=True,
    metavar="N",
    help="Failed health polls in a row after which a media server gets no new calls "
    "(a refused connection while forwarding a call takes it out at once). One "
    "answered poll puts it back.",
)
@click.option(
    "--forward-timeout",
    type=click.FloatRange(min=0.01),
    default=DEFAULTS.forward_timeout_s,
    show_default=True,
    metavar="SECONDS",
    help="Time a media server may take to answer a forwarded request (creating a "
    "session included) before the call is tried on the next one.",
)
@logging_options
def command(
    listen: tuple[str, int],
    media_urls: tuple[str, ...],
    health_interval: float,
    health_timeout: float,
    unhealthy_after: int,
    forward_timeout: float,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the public call API: take a caller's SDP offer, place the session on a
    media server, return its answer.

    POST /v1/calls (alias /v1/realtime/calls) with Content-Type application/sdp
    answers 201 with the SDP answer, Location /v1/calls/{id} and the
    X-Rtclab-Backend header.
    The healthy, non-draining media server with the fewest sessions takes each
    call; if it fails, the next one is tried; with none left the answer is 503
    with Retry-After.  GET and DELETE /v1/calls/{id} show and end a call;
    GET /v1/backends, /healthz and /metrics show the service.  Stops cleanly on
    SIGTERM or SIGINT.
    """
    logs.configure(log_level, log_format)
    config = SignalingConfig(
        media_urls=media_urls,
        health_interval_s=health_interval,
        health_timeout_s=health_timeout,
        unhealthy_after_failures=unhealthy_after,
        forward_timeout_s=forward_timeout,
    )
    host, port = listen
    log.info(
        "starting",
        extra={"listen": format_hostport(listen), "media": list(media_urls)},
    )
    run(serve_until_signalled(create_app(config), host, port))
