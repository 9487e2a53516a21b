"""What STUN each caller's ICE agent exchanged through the emulator: the keepalive record.

Clients differ where the relay's design is tested: how often their ICE agent
sends Binding requests once connected (aioice: a consent check every ~5 s;
libwebrtc: every ~2.2 s), whether those nominate (USE-CANDIDATE), whether it
keeps alive with Binding *indications* instead (which name no session, so a
relay that learns addresses from STUN cannot use them), and whether it still
answers the server's checks after a move.  The emulator sees every datagram of
every caller, so it keeps, per caller mapping, one line per STUN message:
when, which way, what kind, and through which outbound address (the one the
relay saw).  Pure: bytes, addresses and a time in, records out; per-caller
records are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wire import stun
from wire.addr import Address, format_hostport
from wire.demux import PacketKind, classify

_KINDS = {
    stun.MessageClass.REQUEST: "request",
    stun.MessageClass.INDICATION: "indication",
    stun.MessageClass.SUCCESS: "success",
    stun.MessageClass.ERROR: "error",
}


@dataclass(frozen=True, slots=True)
class StunSeen:
    at: float  # Unix time the emulator received it
    direction: str  # "up": from the caller; "down": towards it
    kind: str  # request | indication | success | error
    method: int  # 1: Binding
    use_candidate: bool
    via: Address  # the mapping's outbound address at that moment

    def to_json(self) -> list[Any]:
        return [
            round(self.at, 4),
            self.direction,
            self.kind,
            self.method,
            self.use_candidate,
            format_hostport(self.via),
        ]


@dataclass
class StunWatch:
    """Per caller, the STUN messages it sent and was sent (the first ``limit`` of each)."""

    limit: int = 2000  # ~30 min of a check every second: far beyond a scenario's call
    seen: dict[Address, list[StunSeen]] = field(default_factory=dict)
    malformed: int = 0
    dropped: int = 0  # past the limit

    def observe(
        self, at: float, direction: str, caller: Address, via: Address, data: bytes
    ) -> StunSeen | None:
        """Record ``data`` if it is STUN; returns what was recorded (None: not STUN)."""
        if classify(data) is not PacketKind.STUN:
            return None
        try:
            message = stun.parse(data)
        except stun.StunError:
            self.malformed += 1
            return None
        entry = StunSeen(
            at=at,
            direction=direction,
            kind=_KINDS[message.message_class],
            method=message.method,
            # USE-CANDIDATE has no value: its presence is the flag.
            use_candidate=any(kind == stun.Attr.USE_CANDIDATE for kind, _ in message.attributes),
            via=via,
        )
        records = self.seen.setdefault(caller, [])
        if len(records) >= self.limit:
            self.dropped += 1
            return entry
        records.append(entry)
        return entry

    def to_json(self) -> dict[str, Any]:
        """``{"callers": {caller: [[at, direction, kind, method, use_candidate, via]]}}``."""
        return {
            "fields": ["at", "direction", "kind", "method", "use_candidate", "via"],
            "callers": {
                format_hostport(caller): [entry.to_json() for entry in records]
                for caller, records in self.seen.items()
            },
            "malformed": self.malformed,
            "dropped": self.dropped,
        }
