"""Which media server takes the next call, in the order to try them."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackendView:
    """What placement needs to know about one backend at this moment."""

    index: int  # position in the configuration: the tie-breaker
    healthy: bool
    draining: bool
    load: int  # sessions it has or is being given


def candidates(backends: Iterable[BackendView], exclude: Collection[int] = ()) -> list[BackendView]:
    """Healthy, non-draining backends, fewest sessions first.

    Ties go to the backend configured first, so the same state always gives
    the same order (tests and scenarios can predict it).  ``exclude`` holds
    the indexes already tried for this call.
    """
    usable = [b for b in backends if b.healthy and not b.draining and b.index not in exclude]
    return sorted(usable, key=lambda b: (b.load, b.index))


def retry_after_s(health_interval_s: float) -> int:
    """Seconds a refused caller should wait: by then every backend was polled again."""
    return max(1, math.ceil(health_interval_s))
