"""One UDP socket for every session of a media server: which session a datagram is for, sans-IO.

With ``--media-socket shared`` (the published design: "each transceiver
listens on one shared UDP socket") every session's ICE, DTLS, SRTP and SRTCP
arrive on one socket, and this core tells them apart the way pion/ice's
UDPMux (``udp_mux.go``) and mediasoup's WebRtcServer do: by the remote
address, else by the local ufrag of a STUN Binding request, else drop::

    datagram from SOURCE
      [encap] SOURCE is not a trusted relay ------------------> Drop(untrusted_relay)
      [encap] no PROXY v2 header / a broken one / a LOCAL one -> Drop(no_header |
                                                                bad_header | not_proxied)
              REMOTE = the header's source (the client); nat: REMOTE = SOURCE
      STUN Binding request whose USERNAME names a registered
        local ufrag (the part before the colon) --------------> Deliver(that session);
                                                                REMOTE is now its address
      REMOTE is known ----------------------------------------> Deliver(its session)
      from an unknown REMOTE: a Binding request naming no
        registered ufrag, one without USERNAME, bad STUN -----> Drop(unknown_ufrag |
                                                                no_username | malformed_stun)
      anything else from an unknown REMOTE -------------------> Drop(unknown_source)

    reply from SESSION to REMOTE
      REMOTE is not one of SESSION's addresses ---------------> Drop(no_route)
      nat -----------------------------------------------------> SendTo(REMOTE)
      encap ---------------------------------------------------> SendTo(the relay REMOTE's
                                                                datagrams last came through,
                                                                behind the header they carried)

A Binding request goes by its ufrag even from a known address (pion would
route it by address): in ``nat`` mode every flow reaches us from a relay
upstream port, and a port the kernel recycles for another call's flow must
follow that call.  Requests are rare (consent checks every ~5 s), so parsing
them costs nothing that matters.  A session may own several remote addresses
(a client that moved: in ``nat`` each relay flow is one, in ``encap`` each
client address); the least recently heard from is forgotten beyond
:attr:`DemuxConfig.max_remotes_per_session`, and :meth:`Demux.release` forgets
them all when the session closes.

Nothing here does I/O or reads a clock: the shell passes ``now`` (for which
address was heard from last) and acts on the decisions.  Every drop is
counted by reason in :class:`DemuxCounters`, which several demultiplexers may
share (one per session under ``--media-socket per-session``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wire import proxy_protocol, stun
from wire.addr import Address
from wire.proxy_protocol import ProxyHeaderError

S = TypeVar("S", bound=Hashable)

Datagram = bytes | bytearray | memoryview

# Every reason a datagram (or a reply) is dropped, so /metrics shows each at 0.
DROP_REASONS = (
    "unknown_source",  # not a Binding request, from an address no session owns
    "unknown_ufrag",  # a Binding request naming a ufrag no session registered
    "no_username",  # a Binding request without USERNAME, from an unknown address
    "malformed_stun",  # first byte says STUN, the parser says no (unknown address)
    "untrusted_relay",  # encap: a datagram from an address not in --trusted-relay
    "no_header",  # encap: no PROXY v2 header
    "bad_header",  # encap: a PROXY v2 header that breaks the spec
    "not_proxied",  # encap: a valid header naming no UDP client (LOCAL, TCP, UNIX)
    "no_route",  # a reply to an address the session does not own (or never heard from)
)
_HEADER_DROPS = {"no_header": "no_header", "malformed": "bad_header", "not_proxied": "not_proxied"}

# A client that moved keeps its old addresses while the session lives; this
# many are enough for every move a call sees (each `rebind off` flow through a
# NAT relay is one) and bound what a peer sending from many addresses costs.
MAX_REMOTES_PER_SESSION = 8


@dataclass(frozen=True, slots=True)
class Trust:
    """Relay addresses allowed to send PROXY headers: whole hosts, or exact ``host:port``."""

    hosts: frozenset[str] = frozenset()
    addresses: frozenset[Address] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str | Address]) -> Trust:
        """From ``"10.0.0.1"`` (any port of that host) and ``("10.0.0.1", 3479)`` entries."""
        hosts: set[str] = set()
        addresses: set[Address] = set()
        for entry in entries:
            if isinstance(entry, str):
                hosts.add(str(ipaddress.ip_address(entry)))
            else:
                addresses.add((str(ipaddress.ip_address(entry[0])), int(entry[1])))
        return cls(frozenset(hosts), frozenset(addresses))

    def allows(self, source: Address) -> bool:
        return source in self.addresses or source[0] in self.hosts

    def __bool__(self) -> bool:
        return bool(self.hosts or self.addresses)


@dataclass(frozen=True, slots=True)
class DemuxConfig:
    # False: datagrams arrive as they left the relay's per-flow socket (--forward nat);
    # True: each carries a PROXY v2 header naming the client (--forward encap).
    encap: bool = False
    # encap only: who may send headers.  Empty trusts nobody: everything is dropped.
    trusted: Trust = field(default_factory=Trust)
    max_remotes_per_session: int = MAX_REMOTES_PER_SESSION


@dataclass(slots=True)
class DemuxCounters:
    """Totals since start, shared by every demultiplexer of one media server."""

    delivered: int = 0
    sent: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))


@dataclass(frozen=True, slots=True)
class Deliver(Generic[S]):
    """Hand ``data[offset:]`` to ``session``'s ICE agent as coming from ``remote``."""

    session: S
    remote: Address
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send ``header + data`` to ``destination``."""

    destination: Address
    header: bytes = b""


@dataclass(frozen=True, slots=True)
class Drop:
    """Do nothing with it; counted under ``reason``."""

    reason: str


_DROPS = {reason: Drop(reason) for reason in DROP_REASONS}


@dataclass(slots=True, eq=False)
class Remote(Generic[S]):
    """One remote address a session owns, and how to reach it."""

    address: Address
    session: S
    last_seen: float
    # encap: the relay this address's datagrams last came through, and the
    # header they carried (which replies carry back).  nat: None and b"".
    via: Address | None
    header: bytes
    # The decisions for this address, made once (the hot path allocates nothing).
    deliver: Deliver[S]
    reply: SendTo


class Demux(Generic[S]):
    """The tables: remote address -> session, local ufrag -> session."""

    def __init__(self, config: DemuxConfig, counters: DemuxCounters | None = None) -> None:
        self.config = config
        self.counters = counters or DemuxCounters()
        self._encap = config.encap
        self._by_remote: dict[Address, Remote[S]] = {}
        self._by_ufrag: dict[str, S] = {}
        self._ufrag_of: dict[S, str] = {}
        # session -> its remotes by address, in the order they were learned
        self._remotes_of: dict[S, dict[Address, Remote[S]]] = {}

    # --- sessions -------------------------------------------------------------------

    def register(self, ufrag: str, session: S) -> bool:
        """Route Binding requests naming ``ufrag`` to ``session``; False if another has it."""
        owner = self._by_ufrag.get(ufrag)
        if owner is not None:
            return owner is session
        previous = self._ufrag_of.get(session)
        if previous is not None:
            del self._by_ufrag[previous]
        self._by_ufrag[ufrag] = session
        self._ufrag_of[session] = ufrag
        self._remotes_of.setdefault(session, {})
        return True

    def release(self, session: S) -> list[Address]:
        """Forget ``session``: its ufrag and every address it owned (returned)."""
        ufrag = self._ufrag_of.pop(session, None)
        if ufrag is not None and self._by_ufrag.get(ufrag) is session:
            del self._by_ufrag[ufrag]
        remotes = self._remotes_of.pop(session, {})
        for address in remotes:
            del self._by_remote[address]
        return list(remotes)

    def remotes(self, session: S) -> list[Remote[S]]:
        """The addresses ``session`` owns, oldest first."""
        return list(self._remotes_of.get(session, {}).values())

    def __len__(self) -> int:
        return len(self._ufrag_of)

    # --- datagrams in -----------------------------------------------------------------

    def route(self, data: Datagram, source: Address, now: float) -> Deliver[S] | Drop:
        """Which session the datagram that arrived from ``source`` is for."""
        if self._encap:
            if not self.config.trusted.allows(source):
                return self._drop("untrusted_relay")
            try:
                remote, offset = proxy_protocol.proxied_source(data)
            except ProxyHeaderError as exc:
                return self._drop(_HEADER_DROPS[exc.reason])
        else:
            remote, offset = source, 0
        if (
            len(data) >= offset + stun.HEADER_LENGTH
            and data[offset] <= 3
            and not data[offset] & 0x01
            and not data[offset + 1] & 0x10
        ):
            # STUN with both class bits clear: a request (RFC 8489 section 5).
            decision = self._request(data, offset, source, remote, now)
            if decision is not None:
                return decision
        known = self._by_remote.get(remote)
        if known is None:
            return self._drop("unknown_source")
        known.last_seen = now
        if self._encap and known.via != source:
            self._set_path(known, source, bytes(data[:offset]))
        if known.deliver.offset != offset:
            known.deliver = Deliver(known.session, remote, offset)
        self.counters.delivered += 1
        return known.deliver

    def _request(
        self, data: Datagram, offset: int, source: Address, remote: Address, now: float
    ) -> Deliver[S] | Drop | None:
        """The decision for a STUN request; None: route it by address like anything else."""
        known = remote in self._by_remote
        try:
            message = stun.parse(bytes(data[offset:]))
        except stun.StunError:
            return None if known else self._drop("malformed_stun")
        if message.method != stun.Method.BINDING:
            return None if known else self._drop("unknown_source")
        username = message.username
        if username is None:
            return None if known else self._drop("no_username")
        session = self._by_ufrag.get(username.partition(":")[0])
        if session is None:
            # A known address asking about a ufrag nobody has: its session's
            # ICE agent answers it (401), as with a socket of its own.
            return None if known else self._drop("unknown_ufrag")
        entry = self.learn(session, remote, now)
        if self._encap and entry.via != source:
            self._set_path(entry, source, bytes(data[:offset]))
        if entry.deliver.offset != offset:
            entry.deliver = Deliver(session, remote, offset)
        self.counters.delivered += 1
        return entry.deliver

    def learn(self, session: S, remote: Address, now: float) -> Remote[S]:
        """Make ``remote`` one of ``session``'s addresses (taking it from another if need be)."""
        entry = self._by_remote.get(remote)
        if entry is not None:
            if entry.session is session:
                entry.last_seen = now
                return entry
            self._forget(entry)  # the address changed hands (a recycled relay port)
        entry = Remote(remote, session, now, None, b"", Deliver(session, remote), SendTo(remote))
        self._by_remote[remote] = entry
        owned = self._remotes_of.setdefault(session, {})
        owned[remote] = entry
        if len(owned) > self.config.max_remotes_per_session:
            stalest = min(
                (other for other in owned.values() if other is not entry),
                key=lambda other: other.last_seen,
            )
            self._forget(stalest)
        return entry

    def _forget(self, entry: Remote[S]) -> None:
        del self._by_remote[entry.address]
        owned = self._remotes_of.get(entry.session)
        if owned is not None:
            owned.pop(entry.address, None)

    def _set_path(self, entry: Remote[S], via: Address, header: bytes) -> None:
        entry.via = via
        entry.header = header
        entry.reply = SendTo(via, header)

    # --- datagrams out ----------------------------------------------------------------

    def route_reply(self, session: S, remote: Address) -> SendTo | Drop:
        """Where (and behind which header) ``session``'s datagram for ``remote`` goes."""
        entry = self._by_remote.get(remote)
        if entry is None or entry.session is not session:
            return self._drop("no_route")
        self.counters.sent += 1
        return entry.reply

    def _drop(self, reason: str) -> Drop:
        self.counters.drops[reason] += 1
        return _DROPS[reason]
