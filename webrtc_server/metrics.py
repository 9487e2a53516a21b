"""Prometheus metrics of one media server (``rtclab_media_*``), in a per-app registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webrtc_server.core.demux import DROP_REASONS
from webrtc_server.media_socket import MediaSockets

# Turn latency on loopback is hangover + model delay (~0.7 s); impaired paths add seconds.
_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Setup on loopback is tens of ms; a relay restart or a lossy path makes it seconds.
_SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)


class MediaMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        pending_setups: Callable[[], int] = lambda: 0,
        peer_connections: Callable[[], int] = lambda: 0,
    ) -> None:
        prefix = "rtclab_media"
        self.sessions = Gauge(f"{prefix}_sessions", "Sessions open now.", registry=registry)
        Gauge(
            f"{prefix}_pending_setups",
            "Sessions answered (or being answered) whose caller has not connected yet.",
            registry=registry,
        ).set_function(pending_setups)
        Gauge(
            f"{prefix}_peer_connections",
            "RTCPeerConnections alive and not closed, whether or not a session holds them "
            "(more than rtclab_media_sessions is a leak).",
            registry=registry,
        ).set_function(peer_connections)
        self.draining = Gauge(
            f"{prefix}_draining", "1 while refusing new sessions (POST /drain).", registry=registry
        )
        self.sessions_created = Counter(
            f"{prefix}_sessions_created", "Offers answered with a session.", registry=registry
        )
        self.sessions_closed = Counter(
            f"{prefix}_sessions_closed",
            "Sessions closed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.offers_rejected = Counter(
            f"{prefix}_offers_rejected",
            "Offers refused before a session existed, by error code.",
            ["code"],
            registry=registry,
        )
        self.uplink_frames_received = Counter(
            f"{prefix}_uplink_frames_received",
            "Caller audio frames decoded (20 ms each).",
            registry=registry,
        )
        self.uplink_frames_lost = Counter(
            f"{prefix}_uplink_frames_lost",
            "Caller audio frames missing (RTP timestamp jumps).",
            registry=registry,
        )
        self.downlink_frames_sent = Counter(
            f"{prefix}_downlink_frames_sent",
            "Agent audio frames handed to the sender (speech and silence).",
            registry=registry,
        )
        self.turns = Counter(f"{prefix}_turns", "Responses played to the end.", registry=registry)
        self.response_latency = Histogram(
            f"{prefix}_response_latency_seconds",
            "End of caller speech to the first response frame sent.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.pacing_wait = Histogram(
            f"{prefix}_pacing_wait_seconds",
            "Time a response was fully generated but still being paced out in real time.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.setup = Histogram(
            f"{prefix}_setup_seconds",
            "Offer arrival to each setup milestone.",
            ["phase"],
            buckets=_SETUP_BUCKETS,
            registry=registry,
        )


class MediaSocketCollector(Collector):
    """The media sockets' demultiplexer counters (plain ints on the packet path) at scrape time."""

    def __init__(self, sockets: MediaSockets) -> None:
        self._sockets = sockets

    def collect(self) -> Iterable[Metric]:
        counters = self._sockets.counters
        datagrams = CounterMetricFamily(
            "rtclab_media_socket_datagrams",
            "Datagrams the media sockets' demultiplexer passed: in (delivered to a session) "
            "and out (a session's, sent).  Zero where aioice owns each session's socket "
            "(--media-socket per-session with --forward nat).",
            labels=["direction"],
        )
        datagrams.add_metric(["in"], counters.delivered)
        datagrams.add_metric(["out"], counters.sent)
        yield datagrams
        drops = CounterMetricFamily(
            "rtclab_media_socket_drops",
            "Datagrams the media sockets dropped, by reason: unknown_source, unknown_ufrag, "
            "no_username, malformed_stun (no session to give them to); untrusted_relay, "
            "no_header, bad_header, not_proxied (--forward encap); no_route (a reply to an "
            "address the session does not own).",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            drops.add_metric([reason], counters.drops.get(reason, 0))
        yield drops
        yield GaugeMetricFamily(
            "rtclab_media_sockets_open",
            "UDP sockets the media server holds for media through its demultiplexer "
            "(1 when shared; one per session with per-session encap).",
            value=self._sockets.open_sockets,
        )
