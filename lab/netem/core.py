"""The path model: what an emulated network path does to each packet, as arithmetic.

Pure and seeded: no sockets, no event loop, no clock.  The shell hands a packet
size and ``now`` (seconds) to a :class:`Flow` and gets back either when to
deliver the packet (:class:`Deliver`) or why it is gone (:class:`Drop`).

Per packet, in this order (the first that applies decides):

1. ``blackhole``: drop everything (a cut link, a dead Wi-Fi);
2. random loss: Bernoulli, each packet independently;
3. bursty loss: a Gilbert-Elliott chain stepped once per packet;
4. rate limit: a serialization queue; a packet that would wait longer than
   ``queue_limit_ms`` behind the backlog is dropped (tail drop);
5. delay plus jitter, then, unless ``reorder`` is set, never earlier than the
   packet before it (a FIFO link: jitter stretches gaps, it does not swap packets).

Lost packets never occupy the queue: loss models the radio or the wire, the queue
the bottleneck behind it.

The configuration belongs to the path (one per direction, shared, replaceable at
any time; a new one applies to later packets).  The *state* belongs to each flow
(a UDP caller or a TCP connection): its own queue, Gilbert-Elliott chain and FIFO
order, as each caller sits behind its own access link.  A shared chain would
spread one burst over several calls and make every call's bursts look shorter.

Randomness: each flow and direction has its own generators, one per impairment,
seeded from ``(seed, flow number, direction, impairment)``.  So a seed fixes the
outcome, and adding jitter does not change which packets a loss setting drops.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum


class Direction(StrEnum):
    UP = "up"  # caller -> upstream
    DOWN = "down"  # upstream -> caller


class DropReason(StrEnum):
    LOSS = "loss"
    BURST = "burst"
    QUEUE = "queue"
    BLACKHOLE = "blackhole"


@dataclass(frozen=True, slots=True)
class Deliver:
    at: float  # seconds, on the clock ``now`` came from


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason


Verdict = Deliver | Drop


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class BurstLoss:
    """Gilbert-Elliott loss: a good and a bad state, a Markov chain stepped per packet.

    A packet is lost with the probability of the state it meets; then the chain
    moves.  With the defaults (clean good state, every packet lost in the bad
    one) losses come in runs of mean length ``1 / r`` and the long-run loss rate
    is ``p / (p + r)``.
    """

    p: float  # P(good -> bad) per packet
    r: float  # P(bad -> good) per packet
    loss_good: float = 0.0  # 0: the good state is clean (the Gilbert special case)
    loss_bad: float = 1.0  # 1: a bad spell loses every packet, so spells are bursts

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_good", "loss_bad"):
            _check_probability(name, getattr(self, name))
        if self.r == 0.0:
            raise ValueError("r must be > 0: with r = 0 the bad state never ends")

    @classmethod
    def from_mean(cls, loss: float, mean_burst_packets: float) -> BurstLoss:
        """The chain with long-run loss ``loss`` in bursts of ``mean_burst_packets``."""
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be within [0, 1), got {loss!r}")
        if mean_burst_packets < 1.0:
            raise ValueError(f"a burst is at least 1 packet, got {mean_burst_packets!r}")
        r = 1.0 / mean_burst_packets
        return cls(p=loss * r / (1.0 - loss), r=r)

    @property
    def bad_share(self) -> float:
        """Long-run share of packets that meet the bad state."""
        return self.p / (self.p + self.r)

    @property
    def mean_loss(self) -> float:
        bad = self.bad_share
        return (1.0 - bad) * self.loss_good + bad * self.loss_bad


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """The impairments of one direction.  Every default adds nothing."""

    delay_ms: float = 0.0  # an emulator must be transparent until asked otherwise
    jitter_ms: float = 0.0  # each delay drawn uniformly from delay ± jitter, floored at 0
    loss: float = 0.0  # Bernoulli loss probability per packet
    burst: BurstLoss | None = None  # Gilbert-Elliott loss on top of ``loss``
    rate_kbps: float | None = None  # None: no serialization limit
    # The backlog a rate-limited queue holds before it tail-drops, in time rather
    # than bytes so the bound means the same at any rate; 200 ms is a modest
    # home-router buffer (deep enough to add latency, shallow enough to drop).
    queue_limit_ms: float = 200.0
    blackhole: bool = False
    reorder: bool = False  # False: FIFO, as receivers' jitter buffers expect of a path

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms", "queue_limit_ms"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        _check_probability("loss", self.loss)
        if self.rate_kbps is not None and not (
            self.rate_kbps > 0.0 and math.isfinite(self.rate_kbps)
        ):
            raise ValueError(f"rate_kbps must be > 0 (or None: unlimited), got {self.rate_kbps!r}")


@dataclass
class LinkCounters:
    """What one direction did, summed over flows."""

    delivered: int = 0
    bytes_delivered: int = 0
    dropped: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))

    @property
    def offered(self) -> int:
        return self.delivered + sum(self.dropped.values())

    def as_dict(self) -> dict[str, int]:
        return {
            "offered": self.offered,
            "delivered": self.delivered,
            "bytes_delivered": self.bytes_delivered,
            **{reason.value: count for reason, count in self.dropped.items()},
        }


class _Shared:
    """The configuration and counters of one direction, shared by every flow."""

    __slots__ = ("config", "counters")

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.counters: dict[str, LinkCounters] = {}


class Link:
    """One flow's state in one direction: its queue, loss chain and FIFO order."""

    __slots__ = (
        "_bad",
        "_burst_rng",
        "_busy_until",
        "_counters",
        "_jitter_rng",
        "_last_delivery",
        "_loss_rng",
        "_shared",
    )

    def __init__(self, shared: _Shared, counters: LinkCounters, seed: str) -> None:
        self._shared = shared
        self._counters = counters
        self._loss_rng = random.Random(f"{seed}/loss")
        self._burst_rng = random.Random(f"{seed}/burst")
        self._jitter_rng = random.Random(f"{seed}/jitter")
        self._bad = False
        self._busy_until = -math.inf  # when the serializer has sent its backlog
        self._last_delivery = -math.inf

    def offer(self, size_bytes: int, now: float) -> Verdict:
        config = self._shared.config
        if config.blackhole:
            return self._drop(DropReason.BLACKHOLE)
        if config.loss and self._loss_rng.random() < config.loss:
            return self._drop(DropReason.LOSS)
        if config.burst is None:
            self._bad = False  # a chain switched on later starts good
        elif self._burst_lost(config.burst):
            return self._drop(DropReason.BURST)
        departure = now
        if config.rate_kbps is not None:
            start = max(now, self._busy_until)
            if start - now > config.queue_limit_ms / 1000.0:
                return self._drop(DropReason.QUEUE)
            departure = start + size_bytes * 8 / (config.rate_kbps * 1000.0)
            self._busy_until = departure
        delay_s = config.delay_ms / 1000.0
        if config.jitter_ms:
            jitter_s = config.jitter_ms / 1000.0
            delay_s = max(0.0, delay_s + self._jitter_rng.uniform(-jitter_s, jitter_s))
        at = departure + delay_s
        if not config.reorder:
            at = max(at, self._last_delivery)
        self._last_delivery = max(self._last_delivery, at)
        self._counters.delivered += 1
        self._counters.bytes_delivered += size_bytes
        return Deliver(at)

    def _burst_lost(self, burst: BurstLoss) -> bool:
        rng = self._burst_rng
        lost = rng.random() < (burst.loss_bad if self._bad else burst.loss_good)
        if rng.random() < (burst.r if self._bad else burst.p):
            self._bad = not self._bad
        return lost

    def _drop(self, reason: DropReason) -> Drop:
        self._counters.dropped[reason] += 1
        return Drop(reason)


class Flow:
    """One caller's (or one TCP connection's) path, both directions."""

    __slots__ = ("down", "number", "up")

    def __init__(self, number: int, up: Link, down: Link) -> None:
        self.number = number
        self.up = up
        self.down = down

    def link(self, direction: Direction) -> Link:
        return self.up if direction is Direction.UP else self.down

    def offer(self, direction: Direction, size_bytes: int, now: float) -> Verdict:
        return self.link(direction).offer(size_bytes, now)


class PathModel:
    """The emulated path: a configuration per direction and the flows crossing it."""

    def __init__(
        self,
        seed: int = 0,
        up: LinkConfig | None = None,
        down: LinkConfig | None = None,
    ) -> None:
        self.seed = seed
        self._shared = {
            Direction.UP: _Shared(up or LinkConfig()),
            Direction.DOWN: _Shared(down or LinkConfig()),
        }
        self._flows_opened = 0

    def config(self, direction: Direction) -> LinkConfig:
        return self._shared[direction].config

    def configure(self, direction: Direction, config: LinkConfig) -> None:
        """Replace one direction's impairments; packets offered from now on see them."""
        self._shared[direction].config = config

    def open_flow(self, kind: str = "udp") -> Flow:
        """A new flow; ``kind`` only labels which counters it adds to."""
        number = self._flows_opened
        self._flows_opened += 1
        links = []
        for direction in (Direction.UP, Direction.DOWN):
            shared = self._shared[direction]
            counters = shared.counters.setdefault(kind, LinkCounters())
            links.append(Link(shared, counters, f"{self.seed}/{number}/{direction.value}"))
        return Flow(number, links[0], links[1])

    def counters(self, direction: Direction) -> dict[str, LinkCounters]:
        """Counters of one direction by flow kind (``udp``, ``tcp``)."""
        return self._shared[direction].counters

    def handshake_s(self) -> float:
        """A TCP handshake's round trip on this path: SYN up, SYN-ACK down (no jitter)."""
        up, down = self.config(Direction.UP), self.config(Direction.DOWN)
        return (up.delay_ms + down.delay_ms) / 1000.0
