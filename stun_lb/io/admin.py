"""The relay's admin HTTP app: /healthz, /metrics, /flows; it also owns the UDP relay.

``create_app(config)`` returns an aiohttp app whose cleanup context starts the
relay's sockets and closes them on the way out, so serving the app runs the
relay and stopping it leaves nothing open (tests use the same app through
``aiohttp_client``).

/metrics renders the router's plain counters through a custom collector at
scrape time; nothing on the packet path touches prometheus_client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stun_lb.core.config import RebindPolicy, RelayConfig, redact_url
from stun_lb.core.counters import DIRECTIONS, KINDS
from stun_lb.io.udp import UdpRelay
from wire.addr import format_hostport
from wire.service import create_base_app

RELAY = web.AppKey("relay", UdpRelay)

# The rebind triggers each policy can count, listed so their series exist at 0.
_TRIGGERS = {
    RebindPolicy.OFF: ("new_flow",),
    RebindPolicy.VERIFIED: ("stun_success",),
    RebindPolicy.SSRC: ("stun_success", "ssrc"),
}


def create_app(config: RelayConfig) -> web.Application:
    relay = UdpRelay(config)
    registry = CollectorRegistry()
    registry.register(RelayCollector(relay))
    app = create_base_app(registry, lambda: health(relay))
    app[RELAY] = relay
    app.router.add_get("/flows", _flows)
    app.cleanup_ctx.append(_run_relay)
    return app


async def _run_relay(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    try:
        await relay.start()
        yield
    finally:
        relay.close()
        await relay.wait_closed()


def health(relay: UdpRelay) -> dict[str, Any]:
    config = relay.config
    return {
        "listen": format_hostport(relay.local_address),
        "flows": len(relay.router.table),
        "max_flows": config.max_flows,
        "rebind": config.rebind.value,
        "verify_integrity": config.verify_integrity,
        "idle_timeout_s": config.idle_timeout_s,
        "backends": {str(k): v for k, v in sorted(config.backends.items())},
        "reuse_port": config.reuse_port,
        "state": redact_url(config.state_url) if config.state_url else "memory",
        # False while the shared-state store is unreachable (forwarding goes on).
        "state_up": relay.router.store_health.up,
        "forward": config.forward.value,
        # encap: the socket towards the media servers (their --trusted-relay).
        "internal": format_hostport(relay.internal_address) if relay.router.encap else None,
    }


def flow_list(relay: UdpRelay) -> list[dict[str, Any]]:
    """Every flow, oldest first; times are Unix seconds, ``last_seen`` the client's last."""
    rows = []
    for flow in relay.router.table:
        upstream = relay.upstream_address(flow.id)
        rows.append(
            {
                "id": flow.id,
                "client": format_hostport(flow.client),
                "backend_id": flow.backend_id,
                "backend": format_hostport(flow.backend),
                "upstream": format_hostport(upstream) if upstream else None,
                "server_ufrag": flow.session[0],
                "client_ufrag": flow.session[1],
                "created": round(relay.wall_time(flow.created), 3),
                "last_seen": round(relay.wall_time(flow.last_seen), 3),
                "packets_up": flow.packets_up,
                "packets_down": flow.packets_down,
                "bytes_up": flow.bytes_up,
                "bytes_down": flow.bytes_down,
            }
        )
    return rows


async def _flows(request: web.Request) -> web.Response:
    return web.json_response(flow_list(request.app[RELAY]))


class RelayCollector(Collector):
    """Renders the router's counters as ``rtclab_lb_*`` metrics at scrape time."""

    def __init__(self, relay: UdpRelay) -> None:
        self._relay = relay

    def collect(self) -> Iterable[Metric]:
        router = self._relay.router
        counters = router.counters
        config = self._relay.config

        packets = CounterMetricFamily(
            "rtclab_lb_packets",
            "Datagrams forwarded, by direction (up: client to backend) and kind (RFC 7983).",
            labels=["direction", "kind"],
        )
        size = CounterMetricFamily(
            "rtclab_lb_bytes",
            "UDP payload bytes forwarded, by direction and kind.",
            labels=["direction", "kind"],
        )
        for d, direction in enumerate(DIRECTIONS):
            for k, kind in enumerate(KINDS):
                packets.add_metric([direction, kind.value], counters.packets[d][k])
                size.add_metric([direction, kind.value], counters.bytes[d][k])
        yield packets
        yield size

        drops = CounterMetricFamily(
            "rtclab_lb_drops", "Datagrams dropped, by reason.", labels=["reason"]
        )
        for reason, count in counters.drops.items():
            drops.add_metric([reason], count)
        yield drops

        yield GaugeMetricFamily("rtclab_lb_flows", "Flows in the table.", value=len(router.table))
        yield GaugeMetricFamily(
            "rtclab_lb_max_flows", "The table's bound (--max-flows).", value=config.max_flows
        )
        yield CounterMetricFamily(
            "rtclab_lb_flows_created", "Flows opened.", value=counters.flows_created
        )
        yield CounterMetricFamily(
            "rtclab_lb_flows_expired",
            "Flows closed after --idle-timeout without a datagram from the client.",
            value=counters.flows_closed.get("idle", 0),
        )
        closed = CounterMetricFamily(
            "rtclab_lb_flows_closed", "Flows closed, by reason.", labels=["reason"]
        )
        for reason, count in {"idle": 0, **counters.flows_closed}.items():
            closed.add_metric([reason], count)
        yield closed

        rebinds = CounterMetricFamily(
            "rtclab_lb_rebinds",
            "A known session seen from a new address: off opens a new flow (new_flow); "
            "verified/ssrc move the flow on the backend's STUN success (stun_success) "
            "or on a known RTP SSRC (ssrc).",
            labels=["policy", "trigger"],
        )
        seen = dict.fromkeys(((config.rebind.value, t) for t in _TRIGGERS[config.rebind]), 0)
        for (policy, trigger), count in {**seen, **counters.rebinds}.items():
            rebinds.add_metric([policy, trigger], count)
        yield rebinds
        yield from _state_metrics(self._relay)


def _state_metrics(relay: UdpRelay) -> Iterable[Metric]:
    """The shared-state families (--state redis); all zero with in-memory state."""
    counters = relay.router.counters
    lookups = CounterMetricFamily(
        "rtclab_lb_state_lookups",
        "Shared-state lookups of an address with no flow (its media, or a check that would "
        "open a flow), by result: hit (flow taken over), miss, refused (an entry this relay "
        "cannot use), error (store down or timed out, or an unreadable entry).",
        labels=["result"],
    )
    for result, count in counters.lookups.items():
        lookups.add_metric([result], count)
    yield lookups
    errors = CounterMetricFamily(
        "rtclab_lb_state_errors",
        "Shared-state operations that failed, by op (lookup, write: one per entry; decode: "
        "an entry that could not be read).",
        labels=["op"],
    )
    for op, count in counters.state_errors.items():
        errors.add_metric([op], count)
    yield errors
    yield CounterMetricFamily(
        "rtclab_lb_state_writes",
        "Shared-state entries written or deleted (creation, move, refresh).",
        value=counters.state_writes,
    )
    takeovers = CounterMetricFamily(
        "rtclab_lb_state_takeovers",
        "Flows opened from a shared-state entry, by upstream socket: same (bound to the "
        "address the backend nominated: transparent) or new (that address was not free).",
        labels=["upstream"],
    )
    for upstream, count in counters.takeovers.items():
        takeovers.add_metric([upstream], count)
    yield takeovers
    lookups_book = relay.router.lookups
    yield GaugeMetricFamily(
        "rtclab_lb_state_lookups_in_flight",
        "Shared-state lookups awaiting the store (bounded; the excess is dropped as lookup_busy).",
        value=lookups_book.in_flight if lookups_book is not None else 0,
    )
    yield GaugeMetricFamily(
        "rtclab_lb_state_up",
        "1 while the shared-state store answers (always 1 with in-memory state).",
        value=1 if relay.router.store_health.up else 0,
    )
