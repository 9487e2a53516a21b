"""Prometheus metrics of one media server (``rtclab_media_*``), in a per-app registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Turn latency on loopback is hangover + model delay (~0.7 s); impaired paths add seconds.
_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Setup on loopback is tens of ms; a relay restart or a lossy path makes it seconds.
_SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)


class MediaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "rtclab_media"
        self.sessions = Gauge(f"{prefix}_sessions", "Sessions open now.", registry=registry)
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
