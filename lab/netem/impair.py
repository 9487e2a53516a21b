"""Impairment changes as the control API and the command line state them.

Pure: JSON-shaped values in, validated :class:`~lab.netem.core.LinkConfig`
values out.  A request names only what changes; everything else keeps its
value, and ``reset`` starts again from a clean path first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.netem.core import BurstLoss, Direction, LinkConfig

_NUMBERS = ("delay_ms", "jitter_ms", "loss", "queue_limit_ms")
_FLAGS = ("blackhole", "reorder")
FIELDS = (*_NUMBERS, "rate_kbps", "burst", *_FLAGS)
_DIRECTIONS = {
    "up": (Direction.UP,),
    "down": (Direction.DOWN,),
    "both": (Direction.UP, Direction.DOWN),
}


@dataclass(frozen=True, slots=True)
class ImpairRequest:
    directions: tuple[Direction, ...]
    reset: bool
    changes: Mapping[str, Any]  # LinkConfig field -> new value, already typed


def _number(name: str, value: Any) -> float:
    # bool is an int in Python; "blackhole": true in the wrong field is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def parse_burst(value: Any) -> BurstLoss | None:
    """``null``, ``{"p", "r", "loss_good"?, "loss_bad"?}`` or ``{"loss", "mean_burst_packets"}``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"burst must be an object or null, got {value!r}")
    keys = set(value)
    if keys and keys <= {"loss", "mean_burst_packets"} and "loss" in keys:
        return BurstLoss.from_mean(
            _number("burst.loss", value["loss"]),
            _number("burst.mean_burst_packets", value.get("mean_burst_packets", 1.0)),
        )
    allowed = {"p", "r", "loss_good", "loss_bad"}
    if not {"p", "r"} <= keys or not keys <= allowed:
        raise ValueError(
            "burst takes {p, r, loss_good?, loss_bad?} or {loss, mean_burst_packets?}, "
            f"got keys {sorted(keys)}"
        )
    return BurstLoss(**{key: _number(f"burst.{key}", value[key]) for key in keys})


def parse_impair(body: Any) -> ImpairRequest:
    """Validate a ``POST /impair`` body; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"direction", "reset", *FIELDS}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; known: direction, reset, {FIELDS}")
    direction = body.get("direction", "both")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be up, down or both, got {direction!r}")
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError(f"reset must be true or false, got {reset!r}")
    changes: dict[str, Any] = {}
    for name in _NUMBERS:
        if name in body:
            changes[name] = _number(name, body[name])
    for name in _FLAGS:
        if name in body:
            if not isinstance(body[name], bool):
                raise ValueError(f"{name} must be true or false, got {body[name]!r}")
            changes[name] = body[name]
    if "rate_kbps" in body:
        rate = body["rate_kbps"]
        changes["rate_kbps"] = None if rate is None else _number("rate_kbps", rate)
    if "burst" in body:
        changes["burst"] = parse_burst(body["burst"])
    request = ImpairRequest(_DIRECTIONS[direction], reset, changes)
    apply(LinkConfig(), request)  # range checks (LinkConfig's own) before anything changes
    return request


def apply(config: LinkConfig, request: ImpairRequest) -> LinkConfig:
    base = LinkConfig() if request.reset else config
    return dataclasses.replace(base, **request.changes)


def config_json(config: LinkConfig) -> dict[str, Any]:
    """A direction's impairments as ``GET /state`` shows them."""
    burst = config.burst
    return {
        "delay_ms": config.delay_ms,
        "jitter_ms": config.jitter_ms,
        "loss": config.loss,
        "burst": None
        if burst is None
        else {
            "p": burst.p,
            "r": burst.r,
            "loss_good": burst.loss_good,
            "loss_bad": burst.loss_bad,
            "mean_loss": round(burst.mean_loss, 6),
        },
        "rate_kbps": config.rate_kbps,
        "queue_limit_ms": config.queue_limit_ms,
        "blackhole": config.blackhole,
        "reorder": config.reorder,
    }
