"""Sending each datagram at the time the path model chose: one heap, one timer.

Why not ``loop.call_at`` per packet: at a few thousand packets per second that is
a timer handle per packet and, on close, thousands to cancel.  One heap with a
single timer armed for its head costs a heap push per packet, sends every
packet due at each wake-up in one pass (epoll wakes at millisecond granularity,
so several usually are), and closes by cancelling one handle.  Ties keep
arrival order, so a direction's FIFO order survives equal delivery times.

A packet is never sent before its time.  uvloop counts timers in whole
milliseconds from a clock read at the start of a loop iteration, so its timers
can fire up to about a millisecond early; re-arming for the sub-millisecond
remainder would then spin (measured: ~30k wake-ups/s at 2k packets/s).  After
an early wake the timer is re-armed for at least a millisecond, i.e. the next
tick of that clock, which costs at most a millisecond of lateness.  The stdlib
loop never wakes early.  How late each send is gets recorded: that is the
emulator's own added latency.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Any

Send = Callable[[Any, bytes], None]
_EARLY_WAKE_REARM_S = 0.001  # one tick of uvloop's millisecond timer clock


class DeliveryScheduler:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        record_lateness: Callable[[float], None],
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._record_lateness = record_lateness
        self._heap: list[tuple[float, int, Send, Any, bytes]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, send: Send, target: Any, data: bytes) -> None:
        """Call ``send(target, data)`` at ``at`` (on ``clock``), or now if that has passed."""
        heap = self._heap
        now = self._clock()
        if at <= now and (not heap or heap[0][0] > now):
            # Nothing older is due, so sending at once cannot overtake anything.
            self._record_lateness(now - at)
            send(target, data)
            return
        self._seq += 1
        heapq.heappush(heap, (at, self._seq, send, target, data))
        if self._timer is None or at < self._timer_at:
            self._arm(at, now)

    def _arm(self, at: float, now: float, *, min_delay_s: float = 0.0) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(min_delay_s, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        heap = self._heap
        clock = self._clock
        record = self._record_lateness
        woke_early = True
        while heap:
            now = clock()
            at = heap[0][0]
            if at > now:
                self._arm(at, now, min_delay_s=_EARLY_WAKE_REARM_S if woke_early else 0.0)
                return
            woke_early = False
            _, _, send, target, data = heapq.heappop(heap)
            record(now - at)
            send(target, data)

    def close(self) -> None:
        """Forget everything still waiting (it was in flight when the path went away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
