"""Prometheus metrics of one signaling app (its own registry, so tests can run many)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "rtclab_signaling_"


class SignalingMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        healthy_backends: Callable[[], int],
        calls_tracked: Callable[[], int],
    ) -> None:
        self.calls_created = Counter(
            PREFIX + "calls_created",
            "Calls placed on a media server, by the backend id that took them.",
            ["backend"],
            registry=registry,
        )
        self.calls_deleted = Counter(
            PREFIX + "calls_deleted",
            "Calls hung up through DELETE /v1/calls/{id}, by backend id.",
            ["backend"],
            registry=registry,
        )
        self.placement_failures = Counter(
            PREFIX + "placement_failures",
            "Offers answered 503: no_candidates (nothing healthy and not draining) "
            "or all_failed (every candidate failed when forwarded to).",
            ["reason"],
            registry=registry,
        )
        self.forward_failures = Counter(
            PREFIX + "forward_failures",
            "Forwarded offers a media server did not take, by backend and reason "
            "(unreachable, timeout, draining, backend_error, bad_response).",
            ["backend", "reason"],
            registry=registry,
        )
        self.sessions_abandoned = Counter(
            PREFIX + "sessions_abandoned",
            "Media-server sessions signaling deleted because it no longer wanted them (the "
            "forward timed out, or the caller deleted the call while it was placed), by what "
            "the media server answered: deleted, absent (not created; refused from now on), "
            "unreachable.",
            ["outcome"],
            registry=registry,
        )
        self.placement_retries = Counter(
            PREFIX + "placement_retries",
            "Offers forwarded to another media server after one failed.",
            registry=registry,
        )
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Public API request latency, forwarding included.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.backends_healthy = Gauge(
            PREFIX + "backends_healthy",
            "Media servers that answered their last health polls.",
            registry=registry,
        )
        self.backends_healthy.set_function(healthy_backends)
        self.calls_tracked = Gauge(
            PREFIX + "calls_tracked",
            "Call records held (created, not hung up through signaling).",
            registry=registry,
        )
        self.calls_tracked.set_function(calls_tracked)
