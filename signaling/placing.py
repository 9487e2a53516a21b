"""Placing one offer: the best backend first, the next one when it fails."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from signaling.backends import Backend, BackendRegistry
from signaling.core.placement import retry_after_s
from signaling.media_client import Created, MediaClient, Rejected
from signaling.metrics import SignalingMetrics
from wire.service import ApiError

log = logging.getLogger("rtclab.signaling")


@dataclass(frozen=True, slots=True)
class Placed:
    backend: Backend
    created: Created
    attempts: int


async def place_offer(
    backends: BackendRegistry, media: MediaClient, metrics: SignalingMetrics, offer: str
) -> Placed | Rejected:
    """Forward ``offer`` until a backend takes it or refuses the offer itself.

    The candidate is chosen afresh before each attempt, so a backend that
    failed (or drained) meanwhile is skipped, and concurrent calls see each
    other's placements in progress.  Raises the 503 ApiError when none is left.
    """
    tried: set[int] = set()
    failures: list[str] = []
    while (backend := backends.next_candidate(tried)) is not None:
        if tried:
            metrics.placement_retries.inc()
        tried.add(backend.index)
        backend.health.placement_started()
        placed_at: float | None = None
        try:
            result = await media.create_session(backend.url, offer)
            if isinstance(result, Created):
                placed_at = backends.clock()
        finally:
            backend.health.placement_finished(placed_at)
        if isinstance(result, Created):
            return Placed(backend, result, attempts=len(tried))
        if isinstance(result, Rejected):
            return result
        metrics.forward_failures.labels(backend.label, result.reason.value).inc()
        log.warning(
            "forward failed",
            extra={
                "backend": backend.label,
                "reason": result.reason.value,
                "detail": result.detail,
            },
        )
        backends.forward_failed(backend, result)
        failures.append(f"backend {backend.label}: {result.reason.value}")

    reason = "all_failed" if failures else "no_candidates"
    metrics.placement_failures.labels(reason).inc()
    message = (
        "every media server tried failed (" + "; ".join(failures) + ")"
        if failures
        else "no media server is healthy and accepting calls"
    )
    log.warning("placement failed", extra={"reason": reason, "tried": len(tried)})
    retry_after = retry_after_s(backends.config.health_interval_s)
    raise ApiError(503, "no_backend_available", message, headers={"Retry-After": str(retry_after)})
