"""``rtclab netem``: the user-space path emulator between callers and the stack."""

from __future__ import annotations

import logging

import click

from lab.netem.control import create_app
from lab.netem.core import BurstLoss, LinkConfig
from lab.netem.emulator import NetemConfig
from lab.netem.pool import DEFAULT_POOL, AddressPool
from wire import logs
from wire.addr import Address, parse_hostport
from wire.service import logging_options, run, serve_until_signalled

log = logging.getLogger("rtclab.netem")

DEFAULTS = NetemConfig()
LINK = LinkConfig()


def _hostport(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Address | None:
    if value is None:
        return None
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _pool(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        AddressPool.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _addr_text(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--udp-listen",
    metavar="HOST:PORT",
    default=_addr_text(DEFAULTS.udp_listen),
    show_default=True,
    callback=_hostport,
    help="HOST:PORT callers send UDP to. Media servers advertise this address as "
    "the relay's public address, so callers' ICE, DTLS and RTP cross the emulator.",
)
@click.option(
    "--udp-upstream",
    metavar="HOST:PORT",
    default=_addr_text(DEFAULTS.udp_upstream),
    show_default=True,
    callback=_hostport,
    help="HOST:PORT UDP is forwarded to (the relay). Each caller address gets its "
    "own outbound socket towards it, as behind a NAT.",
)
@click.option(
    "--tcp-listen",
    metavar="HOST:PORT",
    default=None,
    callback=_hostport,
    help="HOST:PORT of a TCP byte proxy to --tcp-upstream (point callers' signaling "
    "URL here so setup round trips cross the path). [default: no TCP hop]",
)
@click.option(
    "--tcp-upstream",
    metavar="HOST:PORT",
    default=_addr_text(DEFAULTS.tcp_upstream),
    show_default=True,
    callback=_hostport,
    help="HOST:PORT the TCP hop connects to (signaling).",
)
@click.option(
    "--control",
    metavar="HOST:PORT",
    default="127.0.0.1:9479",
    show_default=True,
    callback=_hostport,
    help="HOST:PORT of the control API: GET /state, POST /impair, POST /rebind, "
    "GET /healthz, GET /metrics.",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="Seed of every random choice (loss, bursts, jitter): the same seed and the "
    "same traffic give the same losses.",
)
@click.option(
    "--direction",
    type=click.Choice(["up", "down", "both"]),
    default="both",
    show_default=True,
    help="Which direction the impairment options below apply to at start (up: caller "
    "-> upstream, down: upstream -> caller). Change either later with POST /impair.",
)
@click.option(
    "--delay-ms",
    type=click.FloatRange(min=0),
    default=LINK.delay_ms,
    show_default=True,
    help="One-way delay added to every packet, milliseconds.",
)
@click.option(
    "--jitter-ms",
    type=click.FloatRange(min=0),
    default=LINK.jitter_ms,
    show_default=True,
    help="Each packet's delay is drawn uniformly from delay ± jitter (floored at 0). "
    "Packets keep their order unless --reorder.",
)
@click.option(
    "--loss",
    type=click.FloatRange(0, 1),
    default=LINK.loss,
    show_default=True,
    help="Random loss: each packet dropped independently with this probability.",
)
@click.option(
    "--burst-loss",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Bursty loss (Gilbert-Elliott): long-run share of packets lost in bursts, "
    "on top of --loss. 0 disables it.",
)
@click.option(
    "--burst-length",
    type=click.FloatRange(min=1),
    default=3.0,
    show_default=True,
    help="Mean length of a loss burst in packets, when --burst-loss is set.",
)
@click.option(
    "--rate-kbps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Rate limit in kbit/s: packets are serialized at this rate, queueing behind "
    "each other. [default: unlimited]",
)
@click.option(
    "--queue-limit-ms",
    type=click.FloatRange(min=0),
    default=LINK.queue_limit_ms,
    show_default=True,
    help="With --rate-kbps: a packet that would wait longer than this behind the "
    "queue is dropped (tail drop).",
)
@click.option(
    "--blackhole",
    is_flag=True,
    help="Start with the direction(s) dropping everything (UDP) or stalled (TCP).",
)
@click.option(
    "--reorder",
    is_flag=True,
    help="Let jitter reorder packets (by default a later packet never overtakes an "
    "earlier one, as on a real FIFO path).",
)
@click.option(
    "--rebind-address-pool",
    metavar="ADDRESSES",
    default=DEFAULT_POOL,
    show_default=True,
    callback=_pool,
    help="Source addresses a rebind in address mode moves a mapping to: ranges "
    "A-B and single addresses, comma-separated. Linux lets a socket bind any of "
    "127.0.0.0/8 without configuration.",
)
@click.option(
    "--mapping-idle-s",
    type=click.FloatRange(min=0.1),
    default=DEFAULTS.mapping_idle_s,
    show_default=True,
    help="Seconds without traffic after which a caller's mapping (and its outbound "
    "socket) is dropped, like a NAT's idle timeout.",
)
@click.option(
    "--event-loop",
    type=click.Choice(["asyncio", "uvloop"]),
    default="asyncio",
    show_default=True,
    help="asyncio: the stdlib loop, whose timers never fire early (about 0.5 ms of lateness "
    "at the median). uvloop: timers count whole milliseconds and can fire early, which "
    "the emulator answers by waiting a further millisecond.",
)
@logging_options
def command(
    udp_listen: Address,
    udp_upstream: Address,
    tcp_listen: Address | None,
    tcp_upstream: Address,
    control: Address,
    seed: int,
    direction: str,
    delay_ms: float,
    jitter_ms: float,
    loss: float,
    burst_loss: float,
    burst_length: float,
    rate_kbps: float | None,
    queue_limit_ms: float,
    blackhole: bool,
    reorder: bool,
    rebind_address_pool: str,
    mapping_idle_s: float,
    event_loop: str,
    log_level: str,
    log_format: str,
) -> None:
    """Emulate a network path between callers and the stack, in user space.

    UDP from callers to --udp-listen goes to --udp-upstream through one outbound
    socket per caller (like a NAT); replies come back the same way.  Optionally,
    TCP to --tcp-listen is proxied to --tcp-upstream.  Each direction can be
    given delay, jitter, random and bursty loss, a rate limit, or a blackhole,
    and changed at any time through the control API; a mapping can be moved to a
    new source port or address (POST /rebind) to show the upstream a NAT
    rebinding or a client changing networks.  The emulator measures how late it
    sends each packet and the CPU it uses (GET /state, /metrics).  Stops cleanly
    on SIGTERM or SIGINT.
    """
    logs.configure(log_level, log_format)
    try:
        link = LinkConfig(
            delay_ms=delay_ms,
            jitter_ms=jitter_ms,
            loss=loss,
            burst=BurstLoss.from_mean(burst_loss, burst_length) if burst_loss else None,
            rate_kbps=rate_kbps,
            queue_limit_ms=queue_limit_ms,
            blackhole=blackhole,
            reorder=reorder,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    config = NetemConfig(
        udp_listen=udp_listen,
        udp_upstream=udp_upstream,
        tcp_listen=tcp_listen,
        tcp_upstream=tcp_upstream,
        seed=seed,
        up=link if direction in ("up", "both") else LinkConfig(),
        down=link if direction in ("down", "both") else LinkConfig(),
        rebind_pool=rebind_address_pool,
        mapping_idle_s=mapping_idle_s,
    )
    host, port = control
    run(serve_until_signalled(create_app(config), host, port), use_uvloop=event_loop == "uvloop")
