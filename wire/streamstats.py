"""Per-direction audio statistics from what a receiver actually got.

A receiver sees decoded frames, each with a presentation timestamp derived
from the RTP timestamp (aiortc maps the first to 0).  Frames that never came
show up as jumps in that timestamp; stalls show up as gaps in arrival time.
This is the receiving side's view, which is what a listener hears; it does not
trust the sender's counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ArrivalStats:
    """Counts received and missing frames and the longest silence in arrival."""

    frame_ticks: int = 960  # RTP ticks per 20 ms frame at 48 kHz
    received: int = 0
    lost: int = 0
    max_gap_s: float = 0.0
    first_arrival_s: float | None = None
    last_arrival_s: float | None = None
    _last_pts: int | None = None
    # (arrival_s, gap_s) for every gap > 3 frames: where audio stalled and for how long.
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def on_frame(self, arrival_s: float, pts: int | None) -> None:
        if self.last_arrival_s is not None:
            gap = arrival_s - self.last_arrival_s
            self.max_gap_s = max(self.max_gap_s, gap)
            if gap > 3 * self.frame_ticks / 48_000:
                self.gaps.append((self.last_arrival_s, gap))
        else:
            self.first_arrival_s = arrival_s
        self.last_arrival_s = arrival_s
        self.received += 1
        if pts is not None:
            if self._last_pts is not None and pts > self._last_pts:
                missing = (pts - self._last_pts) // self.frame_ticks - 1
                self.lost += max(0, missing)
            self._last_pts = pts if self._last_pts is None else max(self._last_pts, pts)

    def snapshot(self, sent: int | None = None, until_s: float | None = None) -> dict[str, Any]:
        """The call-result shape: packets_sent/received/lost, loss_ratio, max_gap_ms.

        ``until_s`` is when observation ended: a stream that stopped and never
        came back has its trailing silence counted as a gap, and, when the
        sender's count ``sent`` is known, its missing tail counted as lost.
        """
        lost = self.lost
        if sent is not None:
            lost = max(lost, sent - self.received)
        max_gap = self.max_gap_s
        if until_s is not None and self.last_arrival_s is not None:
            max_gap = max(max_gap, until_s - self.last_arrival_s)
        expected = self.received + lost
        return {
            "packets_sent": sent,
            "packets_received": self.received,
            "packets_lost": lost,
            "loss_ratio": round(lost / expected, 6) if expected else 0.0,
            "max_gap_ms": round(max_gap * 1000, 1),
        }


def with_rtp(snapshot: dict[str, Any], rtp: tuple[int, int] | None) -> dict[str, Any]:
    """Add the receiver's RTP-level view (sequence gaps on the wire) to a snapshot.

    ``packets_lost`` above is what the listener missed; ``rtp_packets_lost`` is
    what the network lost.  A receiver whose jitter buffer throws frames away
    after a gap makes the first larger than the second.
    """
    received, lost = rtp if rtp is not None else (None, None)
    expected = (received or 0) + (lost or 0)
    return {
        **snapshot,
        "rtp_packets_received": received,
        "rtp_packets_lost": lost,
        "rtp_loss_ratio": round(lost / expected, 6) if lost is not None and expected else None,
    }
