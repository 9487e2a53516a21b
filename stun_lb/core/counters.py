"""The relay's counters: plain ints the hot path bumps, read by the metrics collector.

Prometheus client calls cost microseconds (locks, label lookups); a forwarder
handling each datagram in a few microseconds cannot afford one per packet.  So
the router increments list slots and dict entries here, and ``/metrics``
renders them through a custom collector when scraped.

Packets are counted by direction and kind (RFC 7983).  Looking up a kind via
an enum-keyed dict costs as much as the rest of the fast path (``Enum``
hashes in Python), so kinds are small ints: :data:`KINDS` names them and
:func:`kind_index` maps a datagram to one through a table computed once from
:func:`wire.demux.classify`, so the demultiplexing rule still lives in one
place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wire.demux import PacketKind, classify

KINDS: tuple[PacketKind, ...] = tuple(PacketKind)
STUN = KINDS.index(PacketKind.STUN)
RTP = KINDS.index(PacketKind.RTP)
OTHER = KINDS.index(PacketKind.OTHER)
DIRECTIONS = ("up", "down")
UP, DOWN = 0, 1

# classify() reads at most the first two bytes, so its answer for every
# two-byte prefix is the whole rule: 64 KiB, built once at import.
_KIND_BY_PREFIX = bytes(
    KINDS.index(classify(bytes((first, second)))) for first in range(256) for second in range(256)
)


# What the shell hands in: bytes, or a view into its receive buffer.
Datagram = bytes | bytearray | memoryview


def kind_index(data: Datagram) -> int:
    """The index in :data:`KINDS` of ``data``'s kind (same answer as ``classify``)."""
    if len(data) >= 2:
        return _KIND_BY_PREFIX[(data[0] << 8) | data[1]]
    return KINDS.index(classify(bytes(data)))


# Every reason the relay drops a datagram for, so /metrics shows each at 0
# before it first happens (alerts on a rate need the series to exist).
DROP_REASONS = (
    "not_webrtc",  # first byte outside STUN/DTLS/RTP/RTCP (RFC 7983)
    "unknown_source",  # not STUN, from an address with no flow
    "malformed",  # first byte says STUN, the parser says no
    "not_binding_request",  # STUN from an unknown address that is not a Binding request
    "no_username",  # a Binding request without USERNAME (not from a full ICE agent)
    "bad_token",  # the server ufrag is not a route token signed with our secret
    "unknown_backend",  # the token names a backend id the relay has no host for
    "bad_integrity",  # --verify-integrity: MESSAGE-INTEGRITY does not match
    "table_full",  # --max-flows reached: new flows are refused
    "rebind_conflict",  # a verified move towards an address another flow now owns
    "replayed_check",  # a check whose transaction id the flow already had from another address
    "flow_closed",  # the backend sent on a flow the relay had just closed
    "upstream_open_failed",  # the shell could not open the upstream socket
    "send_failed",  # the kernel refused a send (buffer full, ICMP unreachable, ...)
    # --forward encap: what the internal socket refuses from the media-server side
    "untrusted_backend",  # from an address that is no configured backend host
    "no_header",  # no PROXY v2 header
    "bad_header",  # a PROXY v2 header that breaks the spec
    "not_proxied",  # a valid header naming no UDP client (LOCAL, TCP, UNIX)
    # --state redis: a datagram from an address with no flow waits for a lookup
    "lookup_busy",  # too many lookups in flight: not looked up, dropped
    "lookup_overflow",  # its address already holds the most datagrams a lookup may hold
    "lookup_failed",  # the store did not answer (or answered garbage) for its address
)

# Outcomes of a shared-state lookup, and the store operations that can fail.
# refused: found, but naming a session or backend this relay does not accept
# (or the table is full); its datagrams are treated as from an unknown address.
LOOKUP_RESULTS = ("hit", "miss", "refused", "error")
STATE_OPS = ("lookup", "write", "decode")
# A takeover's upstream socket: bound to the recorded address, or a fresh port.
TAKEOVER_UPSTREAMS = ("same", "new")


@dataclass(slots=True)
class Counters:
    """Totals since start.  Mutated in place by the router and the shell."""

    # [direction][kind]
    packets: list[list[int]] = field(default_factory=lambda: [[0] * len(KINDS) for _ in "ud"])
    bytes: list[list[int]] = field(default_factory=lambda: [[0] * len(KINDS) for _ in "ud"])
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    flows_created: int = 0
    # reason ("idle", "upstream_open_failed", ...) -> count
    flows_closed: dict[str, int] = field(default_factory=dict)
    # (policy, trigger) -> count; trigger new_flow | stun_success | ssrc
    rebinds: dict[tuple[str, str], int] = field(default_factory=dict)
    # --state redis
    lookups: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOOKUP_RESULTS, 0))
    state_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATE_OPS, 0))
    state_writes: int = 0  # entries written (or deleted) successfully
    takeovers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TAKEOVER_UPSTREAMS, 0))

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def closed(self, reason: str) -> None:
        self.flows_closed[reason] = self.flows_closed.get(reason, 0) + 1

    def rebind(self, policy: str, trigger: str) -> None:
        key = (policy, trigger)
        self.rebinds[key] = self.rebinds.get(key, 0) + 1

    def state_error(self, op: str, count: int = 1) -> None:
        self.state_errors[op] = self.state_errors.get(op, 0) + count
