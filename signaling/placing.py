"""Placing one offer: the best backend first, the next one when it fails."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from signaling.backends import Backend, BackendRegistry
from signaling.calls import new_session_id
from signaling.core.forwarding import FailureReason
from signaling.core.placement import retry_after_s
from signaling.media_client import Created, Failed, MediaClient, Rejected
from signaling.metrics import SignalingMetrics
from wire.service import ApiError

log = logging.getLogger("rtclab.signaling")


@dataclass(frozen=True, slots=True)
class Placed:
    backend: Backend
    created: Created
    attempts: int
    session_id: str


class PlacingCall(Protocol):
    """The call record being placed, as placement sees it."""

    def attempt(self, backend: Backend, session_id: str) -> None:
        """Record that ``backend`` is being asked for session ``session_id``."""
        ...

    @property
    def wanted(self) -> bool:
        """False once the caller deleted the call."""
        ...


async def place_offer(
    backends: BackendRegistry,
    media: MediaClient,
    metrics: SignalingMetrics,
    offer: str,
    call: PlacingCall,
) -> Placed | Rejected:
    """Forward ``offer`` until a backend takes it or refuses the offer itself.

    The candidate is chosen afresh before each attempt, so a backend that
    failed (or drained) meanwhile is skipped, and concurrent calls see each
    other's placements in progress.  Each attempt names the session id it
    asks for; a backend that timed out is told to delete it, so a session
    created after signaling gave up does not wait for its setup timeout.
    Raises the 503 ApiError when no backend is left, and 409 if the caller
    deleted the call meanwhile.
    """
    tried: set[int] = set()
    failures: list[str] = []
    while (backend := backends.next_candidate(tried)) is not None:
        if tried:
            metrics.placement_retries.inc()
        tried.add(backend.index)
        session_id = new_session_id()
        call.attempt(backend, session_id)
        backend.health.placement_started()
        placed_at: float | None = None
        try:
            result = await media.create_session(backend.url, offer, session_id)
            if isinstance(result, Created):
                placed_at = backends.clock()
        finally:
            backend.health.placement_finished(placed_at)
        if not call.wanted:
            if isinstance(result, Created):
                await abandon(media, metrics, f"{backend.url}{result.session_path}")
            raise ApiError(409, "call_deleted", "the call was deleted while it was being placed")
        if isinstance(result, Failed) and result.reason is FailureReason.TIMEOUT:
            await abandon(media, metrics, f"{backend.url}/sessions/{session_id}")
        if isinstance(result, Created):
            return Placed(backend, result, attempts=len(tried), session_id=session_id)
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


async def abandon(media: MediaClient, metrics: SignalingMetrics, session_url: str) -> None:
    """Delete a session signaling no longer wants (its answer came too late, or never).

    The media server closes it if it exists and otherwise refuses that id from
    now on (webrtc_server's ``delete_unknown``), so a POST still on its way
    creates nothing.
    """
    status = await media.delete_session(session_url, quick=True)
    outcome = (
        "unreachable" if isinstance(status, Failed) else "deleted" if status == 204 else "absent"
    )
    metrics.sessions_abandoned.labels(outcome).inc()
    log.info("session abandoned", extra={"session": session_url, "outcome": outcome})
