"""The media servers signaling knows, and the task that polls their health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signaling.config import SignalingConfig
from signaling.core.forwarding import FailureReason
from signaling.core.health import BackendHealth, Health, HealthChanged
from signaling.core.placement import BackendView, candidates
from signaling.media_client import Failed, MediaClient

log = logging.getLogger("rtclab.signaling")


@dataclass(eq=False)
class Backend:
    index: int
    url: str
    health: BackendHealth

    @property
    def label(self) -> str:
        """For metrics and logs: the id it reports, else its URL (before the first poll)."""
        backend_id = self.health.backend_id
        return self.url if backend_id is None else str(backend_id)

    def view(self) -> BackendView:
        return BackendView(
            index=self.index,
            healthy=self.health.state is Health.HEALTHY,
            draining=self.health.draining,
            load=self.health.load,
        )

    def to_json(self) -> dict[str, Any]:
        health = self.health
        return {
            "url": self.url,
            "backend_id": health.backend_id,
            "health": health.state.value,
            "draining": health.draining,
            "sessions": health.reported_sessions,
            "load": health.load,
            "consecutive_failures": health.consecutive_failures,
            "last_error": health.last_error,
        }


class BackendRegistry:
    """Backends in configuration order; the health poller keeps their state current."""

    def __init__(self, config: SignalingConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.backends = [
            Backend(index, url.rstrip("/"), BackendHealth(config.unhealthy_after_failures))
            for index, url in enumerate(config.media_urls)
        ]

    def next_candidate(self, tried: set[int]) -> Backend | None:
        """The backend the next attempt of a call should go to, if any is left."""
        order = candidates((b.view() for b in self.backends), exclude=tried)
        return self.backends[order[0].index] if order else None

    def healthy_count(self) -> int:
        return sum(1 for b in self.backends if b.health.state is Health.HEALTHY)

    def placeable_count(self) -> int:
        return sum(1 for b in self.backends if b.health.placeable)

    def forward_failed(self, backend: Backend, failure: Failed) -> None:
        if failure.reason is FailureReason.DRAINING:
            if not backend.health.draining:
                log.info("backend draining", extra={"backend": backend.label, "url": backend.url})
            backend.health.saw_draining()
            return
        change = backend.health.forward_failed(failure.detail, conclusive=failure.conclusive)
        self._log_change(backend, change)

    # --- polling -------------------------------------------------------------

    async def poll_all(self, media: MediaClient) -> None:
        await asyncio.gather(*(self._poll(media, backend) for backend in self.backends))

    async def run_poller(self, media: MediaClient) -> None:
        """Poll every backend each ``health_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.poll_all(media)
            except Exception:  # a bug here must not stop polling for good
                log.exception("health poll round failed")

    async def _poll(self, media: MediaClient, backend: Backend) -> None:
        asked_at = self.clock()
        result = await media.healthz(backend.url)
        health = backend.health
        if isinstance(result, Failed):
            self._log_change(backend, health.poll_failed(result.detail))
            return
        if health.backend_id is not None and health.backend_id != result.backend_id:
            log.warning(
                "backend id changed",
                extra={"url": backend.url, "old": health.backend_id, "new": result.backend_id},
            )
        if result.draining != health.draining and health.state is Health.HEALTHY:
            log.info(
                "backend draining" if result.draining else "backend no longer draining",
                extra={"backend": result.backend_id, "url": backend.url},
            )
        self._log_change(backend, health.poll_succeeded(result, asked_at))

    def _log_change(self, backend: Backend, change: HealthChanged | None) -> None:
        if change is None:
            return
        log.info(
            "backend health",
            extra={
                "backend": backend.label,
                "url": backend.url,
                "old": change.old.value,
                "new": change.new.value,
                "reason": change.reason,
            },
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [backend.to_json() for backend in self.backends]
