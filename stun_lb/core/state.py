"""Shared flow state, sans-IO: what the relay writes to its store, when, and how it asks.

With ``--state redis://...`` every flow also lives in Redis, one entry per
client address, so a relay that has never seen a client (its relay died and
the kernel rehashed the client onto this one) can pick the flow up from the
first packet instead of waiting for the next STUN check.  Everything here is
bookkeeping over a clock passed in by the caller; the Redis commands
themselves are issued by the shell (:mod:`stun_lb.io.state`).

Writing (:class:`WriteBook`):

* a flow's entry is written when its upstream socket is open (creation,
  takeover) and when its client moves; the move also deletes the old
  address's entry;
* every write sets the entry to expire when the flow would (last packet +
  idle timeout), and active flows are rewritten once per refresh interval
  (a third of the idle timeout), never per packet.  A flow closed by idle
  expiry just lets its entry lapse;
* writes coalesce per key until the shell takes them, so the queue is
  bounded by the number of flows whatever the store's health.

Looking up (:class:`LookupBook`): media from an address with no flow (or a
STUN check that would open one: see ``Router._look_up_first``) starts ONE
lookup for that address and is held; later datagrams from it are held with
it, up to a few.  Lookups in flight and bytes held are bounded, and an
address found missing (or whose lookup failed) is remembered for a short
time, so a flood of unknown sources costs the store at most one lookup per
source per ``negative_ttl_s`` and never more than ``max_lookups_in_flight``
at once.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from stun_lb.core.config import ForwardMode
from stun_lb.core.counters import Datagram
from stun_lb.core.table import Flow, SessionKey
from wire.addr import Address, format_hostport, parse_hostport

KEY_PREFIX = "rtclab:lb:flow:"
# 2 added "forward"; a version-1 entry (written before --forward existed) is a nat one.
RECORD_VERSION = 2


def record_key(client: Address) -> str:
    """The store key of ``client``'s entry: ``rtclab:lb:flow:HOST:PORT``."""
    return KEY_PREFIX + format_hostport(client)


# --- the entry ---------------------------------------------------------------


class RecordError(ValueError):
    """A stored entry is not one this relay can read."""


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """One flow as stored: enough for another relay to take it over unchanged.

    Under ``--forward encap`` this is the published pair <client address,
    media server>, with the session's ufrags and the address the media
    server knows the client by (``upstream``: the client's own, unless a
    verified move happened since).
    """

    client: Address
    backend_id: int
    # As the writing relay configured it; the session port is its port.
    backend: Address
    session: SessionKey
    # nat: the writing relay's end of the upstream socket, the peer address the
    # media server nominated, so the one a takeover must send from.  encap: the
    # client address the flow's PROXY header names.
    upstream: Address
    forward: ForwardMode = ForwardMode.NAT


def record_of(flow: Flow) -> FlowRecord:
    assert flow.upstream is not None, "a flow is written once its upstream socket is open"
    forward = ForwardMode.ENCAP if flow.encap_header else ForwardMode.NAT
    return FlowRecord(
        flow.client, flow.backend_id, flow.backend, flow.session, flow.upstream, forward
    )


def encode_record(record: FlowRecord) -> bytes:
    return json.dumps(
        {
            "v": RECORD_VERSION,
            "client": format_hostport(record.client),
            "backend_id": record.backend_id,
            "backend": format_hostport(record.backend),
            "server_ufrag": record.session[0],
            "client_ufrag": record.session[1],
            "upstream": format_hostport(record.upstream),
            "forward": record.forward.value,
        },
        separators=(",", ":"),
    ).encode()


def decode_record(client: Address, raw: bytes) -> FlowRecord:
    """The entry stored under ``client``'s key; :class:`RecordError` if unreadable."""
    try:
        fields = json.loads(raw)
        if fields["v"] not in (1, RECORD_VERSION):
            raise RecordError(f"entry version {fields['v']!r}, not 1..{RECORD_VERSION}")
        forward = ForwardMode(fields["forward"]) if fields["v"] >= 2 else ForwardMode.NAT
        record = FlowRecord(
            client=parse_hostport(fields["client"]),
            backend_id=int(fields["backend_id"]),
            backend=parse_hostport(fields["backend"]),
            session=(str(fields["server_ufrag"]), str(fields["client_ufrag"])),
            upstream=parse_hostport(fields["upstream"]),
            forward=forward,
        )
    except RecordError:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise RecordError(f"unreadable entry: {exc}") from exc
    if record.client != client:
        raise RecordError(f"entry names {record.client}, not {client}")
    return record


# --- writing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``, expiring in ``ttl_ms``."""

    key: str
    value: bytes
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


StoreOp = Put | Delete


class WriteBook:
    """Which entries to write, coalesced per key, and when active flows are refreshed."""

    def __init__(self, idle_timeout_s: float, refresh_interval_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.refresh_interval_s = refresh_interval_s
        # key -> the latest operation on it; insertion order is issue order.
        self._ops: dict[str, StoreOp] = {}
        self.next_refresh_at = 0.0

    def __len__(self) -> int:
        return len(self._ops)

    def pop_ops(self) -> list[StoreOp]:
        """Everything to send now, in order; the book starts empty again."""
        ops, self._ops = list(self._ops.values()), {}
        return ops

    def write(self, flow: Flow, now: float) -> None:
        """Queue ``flow``'s entry, expiring when the flow would."""
        ttl_s = flow.last_seen + self.idle_timeout_s - now
        key = record_key(flow.client)
        self._ops.pop(key, None)  # re-queued at the back: the newest write wins
        self._ops[key] = Put(key, encode_record(record_of(flow)), max(1, math.ceil(ttl_s * 1000)))
        flow.state_written_at = now

    def moved(self, flow: Flow, old: Address, now: float) -> None:
        """``flow``'s client moved from ``old``: the old entry goes, the new one is written."""
        key = record_key(old)
        self._ops.pop(key, None)
        self._ops[key] = Delete(key)
        self.write(flow, now)

    def refresh_due(self, now: float) -> bool:
        return now >= self.next_refresh_at

    def refresh(self, flows: Iterable[Flow], now: float) -> int:
        """Rewrite every flow active since its last write and written an interval ago.

        Returns how many were queued.  A rewrite (not just a new expiry)
        also restores entries a restarted store has lost.
        """
        queued = 0
        horizon = now - self.refresh_interval_s
        for flow in flows:
            if (
                flow.upstream is not None
                and flow.last_seen > flow.state_written_at
                and flow.state_written_at <= horizon
            ):
                self.write(flow, now)
                queued += 1
        self.next_refresh_at = now + self.refresh_interval_s
        return queued


# --- looking up -----------------------------------------------------------------


class Admission(enum.Enum):
    """What becomes of a datagram from an address with no flow."""

    START = "start"  # held; look the address up (the caller starts the lookup)
    HELD = "held"  # held with the others while that address's lookup runs
    MISSING = "missing"  # looked up moments ago and not there: unknown_source
    FAILED = "failed"  # its lookup failed moments ago: lookup_failed
    BUSY = "busy"  # max_lookups_in_flight reached: lookup_busy
    OVERFLOW = "overflow"  # the hold bounds are reached: lookup_overflow


@dataclass(frozen=True, slots=True)
class LookupLimits:
    hold_packets: int
    max_in_flight: int
    hold_bytes: int
    negative_ttl_s: float
    negative_cache_size: int


class LookupBook:
    """Pending lookups with their held datagrams, and a bounded negative cache."""

    def __init__(self, limits: LookupLimits) -> None:
        self.limits = limits
        self._pending: dict[Address, list[bytes]] = {}
        self.held_bytes = 0
        # address -> (expires_at, failed).  Every entry lives negative_ttl_s
        # and the clock only moves forward, so insertion order is expiry order:
        # the oldest entry is always first.
        self._negative: dict[Address, tuple[float, bool]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def pending(self, client: Address) -> bool:
        return client in self._pending

    def admit(self, client: Address, data: Datagram, now: float) -> Admission:
        """Decide about one datagram from ``client``, which has no flow."""
        held = self._pending.get(client)
        if held is None:
            negative = self._negative.get(client)
            if negative is not None:
                expires_at, failed = negative
                if expires_at > now:
                    return Admission.FAILED if failed else Admission.MISSING
                del self._negative[client]
            if len(self._pending) >= self.limits.max_in_flight:
                return Admission.BUSY
        elif len(held) >= self.limits.hold_packets:
            return Admission.OVERFLOW
        size = len(data)
        if self.held_bytes + size > self.limits.hold_bytes:
            return Admission.OVERFLOW
        self.held_bytes += size
        if held is None:
            self._pending[client] = [bytes(data)]
            return Admission.START
        held.append(bytes(data))
        return Admission.HELD

    def finish(self, client: Address, now: float, *, negative: bool, failed: bool) -> list[bytes]:
        """End ``client``'s lookup; return what was held, oldest first.

        ``negative``: the address has no flow after this lookup; remember that
        (as a failure when ``failed``) for ``negative_ttl_s``.
        """
        held = self._pending.pop(client, [])
        self.held_bytes -= sum(len(data) for data in held)
        if negative:
            self._remember(client, now, failed)
        return held

    def _remember(self, client: Address, now: float, failed: bool) -> None:
        negative = self._negative
        negative.pop(client, None)
        # Forget expired entries from the front, then the oldest if still full.
        while negative:
            oldest = next(iter(negative))
            if negative[oldest][0] > now and len(negative) < self.limits.negative_cache_size:
                break
            del negative[oldest]
        negative[client] = (now + self.limits.negative_ttl_s, failed)

    def negative_size(self) -> int:
        return len(self._negative)


# --- the store's health -------------------------------------------------------------


class StoreHealth:
    """Up or down, from the outcome of each store operation; reports only the changes.

    The shell logs a change once, so an outage is one line in the log, not
    one per packet or per write.
    """

    def __init__(self) -> None:
        self.up = True

    def record(self, ok: bool) -> bool:
        """Note one outcome; True when it changed the state."""
        if ok == self.up:
            return False
        self.up = ok
        return True
