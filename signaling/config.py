"""What a signaling process is configured with."""

from __future__ import annotations

from dataclasses import dataclass

from signaling.core.offer import MAX_OFFER_BYTES


@dataclass(frozen=True, slots=True)
class SignalingConfig:
    # Base URLs of the media servers' internal API, in order; the order breaks
    # placement ties, so the first listed takes the first call.
    media_urls: tuple[str, ...]
    # A dead media server should stop receiving calls within a couple of
    # seconds; polling loopback every second costs next to nothing.
    health_interval_s: float = 1.0
    # /healthz answers in milliseconds; a server that takes a second is too
    # busy to be given new calls anyway.
    health_timeout_s: float = 1.0
    # One lost poll on a busy machine must not pull a backend; two in a row
    # (about 2 s at the default interval) means it is gone.  Connection errors
    # while forwarding a call pull it at once, so callers rarely wait for this.
    unhealthy_after_failures: int = 2
    # Creating a session means a new peer connection, a DTLS certificate and
    # ICE gathering: tens of milliseconds idle, seconds on a loaded 2-core box.
    # Well under common HTTP client timeouts (30 s), so a caller still gets our
    # 503 rather than its own timeout.
    forward_timeout_s: float = 10.0
    # Real offers are 2-10 KB; 64 KiB leaves room for many media sections
    # while bounding what one request can make us hold.
    max_offer_bytes: int = MAX_OFFER_BYTES
    # Call records are ~200 bytes; the oldest is forgotten past this many so a
    # long-running lab cannot grow without bound.
    max_calls: int = 100_000

    def __post_init__(self) -> None:
        if len(set(self.media_urls)) != len(self.media_urls):
            raise ValueError("each media server URL may be given only once")
        if self.health_interval_s <= 0 or self.health_timeout_s <= 0:
            raise ValueError("health interval and timeout must be positive")
        if self.forward_timeout_s <= 0:
            raise ValueError("forward timeout must be positive")
        if self.unhealthy_after_failures < 1:
            raise ValueError("unhealthy_after_failures must be at least 1")
