"""The relay's decision maker, sans-IO: datagrams and a clock in, decisions out.

One datagram's path::

    client datagram --classify (RFC 7983)--> OTHER?            -> Drop(not_webrtc)
                    --address table-------> known client?      -> ForwardUp(flow)
                    --STUN?--> parse, USERNAME, route token, [integrity]
                                  session known and rebind on  -> ForwardUp(its flow),
                                                                  remember the transaction
                                  ...its transaction id already
                                     seen from another address -> Drop(replayed_check)
                                  shared state, not looked up  -> Held + LookupRequested
                                  otherwise                    -> FlowOpened + ForwardUp
                    --RTP with a known SSRC (rebind ssrc)----- -> ClientMoved + ForwardUp
                    --shared state (--state redis)------------ -> Held + LookupRequested
                                                                  (or a bounded Drop)
                    --anything else-------------------------- -> Drop(unknown_source)

    lookup answer for an address --found--> FlowOpened(upstream=recorded) + the held
                                 datagrams replayed; otherwise they are replayed
                                 against a short negative cache (STUN checks still
                                 open flows the usual way)

    backend datagram on flow F ---------------------------------> ForwardDown(F's client)
        (a Binding success answering a remembered transaction first moves F
         to the address that check came from: rebind verified/ssrc)

--forward encap: client datagrams take the same path; ForwardUp then means
"out of the internal socket behind F's PROXY v2 header", which names F's
upstream: the client's address when F opened (kept across verified/ssrc
moves, so the backend sees no change, as with nat's upstream socket).
Replies arrive on the internal socket::

    datagram from SOURCE --SOURCE no configured backend host---> Drop(untrusted_backend)
                         --no/broken/LOCAL PROXY header--------> Drop(no_header |
                                                                 bad_header | not_proxied)
                         --header names U, a flow's upstream---> Decap(that flow's client)
                              (after the pending-check step above: a move)
                         --header names U, no such flow-------> Decap(U): no state needed

Every bad input is a named :class:`Drop`, counted; nothing here raises on
network input.  Nothing here does I/O or reads a clock: the shell passes
``now`` and acts on the decisions and on the queued :attr:`Router.events`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from stun_lb.core.config import ForwardMode, RebindPolicy, RelayConfig
from stun_lb.core.counters import DOWN, DROP_REASONS, OTHER, RTP, STUN, UP, Counters, Datagram
from stun_lb.core.counters import kind_index as _kind_index
from stun_lb.core.events import (
    HELD,
    ClientMoved,
    Decap,
    Decision,
    Drop,
    Event,
    FlowClosed,
    FlowOpened,
    ForwardDown,
    LookupRequested,
)
from stun_lb.core.state import (
    Admission,
    FlowRecord,
    LookupBook,
    LookupLimits,
    RecordError,
    StoreHealth,
    WriteBook,
    decode_record,
)
from stun_lb.core.table import Flow, FlowTable, PendingCheck
from wire import proxy_protocol, route_token, stun
from wire.addr import Address
from wire.demux import rtp_ssrc as _rtp_ssrc_of_bytes

# rtp_ssrc reads with struct.unpack_from, which takes any buffer, so it works on
# the shell's memoryview without a copy; only its annotation says bytes.
rtp_ssrc = cast(Callable[[Datagram], int | None], _rtp_ssrc_of_bytes)

_DROPS = {reason: Drop(reason) for reason in DROP_REASONS}
_ADMISSION_DROPS = {
    Admission.MISSING: "unknown_source",
    Admission.FAILED: "lookup_failed",
    Admission.BUSY: "lookup_busy",
    Admission.OVERFLOW: "lookup_overflow",
}

_HEADER_DROPS = {"no_header": "no_header", "malformed": "bad_header", "not_proxied": "not_proxied"}

# What the shell sends once a lookup has answered: each held datagram and its decision.
Replay = list[tuple[bytes, Decision]]


class Router:
    def __init__(self, config: RelayConfig) -> None:
        """``config.backends`` maps ids to hosts as configured; the shell resolves them."""
        self.config = config
        self.table = FlowTable(config.idle_timeout_s, config.max_flows, config.checks_per_flow)
        self.counters = Counters()
        # Flow-table changes for the shell, in order; drained by pop_events().
        self.events: list[Event] = []
        self._policy = config.rebind
        self._learn_ssrcs = config.rebind is RebindPolicy.SSRC
        self.encap = config.forward is ForwardMode.ENCAP
        # encap: set by on_listening before the first datagram.
        self._public: Address | None = None
        self._backend_hosts: frozenset[str] = frozenset()
        # A policy that moves flows on checks remembers which address sent each one.
        self._remember_checks = config.rebind is not RebindPolicy.OFF
        self._packets_up = self.counters.packets[UP]
        self._bytes_up = self.counters.bytes[UP]
        self._packets_down = self.counters.packets[DOWN]
        self._bytes_down = self.counters.bytes[DOWN]
        # Shared state (--state redis): None with the default in-memory state,
        # so the memory relay's paths are exactly the published ones.
        self.lookups: LookupBook | None = None
        self.writes: WriteBook | None = None
        # Fed by the shell with the outcome of every store operation.
        self.store_health = StoreHealth()
        if config.state_url is not None:
            self.lookups = LookupBook(
                LookupLimits(
                    hold_packets=config.lookup_hold_packets,
                    max_in_flight=config.max_lookups_in_flight,
                    hold_bytes=config.lookup_hold_bytes,
                    negative_ttl_s=config.negative_ttl_s,
                    negative_cache_size=config.negative_cache_size,
                )
            )
            self.writes = WriteBook(config.idle_timeout_s, config.state_refresh_interval_s)

    def on_listening(self, public: Address, backend_hosts: frozenset[str]) -> None:
        """The shell bound the public socket at ``public``; backends resolved to these hosts.

        encap: ``public`` is the destination every PROXY header names, and only
        datagrams from ``backend_hosts`` are read as the backends' replies.
        """
        self._public = public
        self._backend_hosts = backend_hosts

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def next_deadline(self) -> float | None:
        """When to call :meth:`on_timer` next, or None while there are no flows."""
        deadline = self.table.next_expiry()
        if self.writes is not None and len(self.table):
            refresh = self.writes.next_refresh_at
            if deadline is None or refresh < deadline:
                return refresh
        return deadline

    # --- inputs ---------------------------------------------------------------

    def on_client_datagram(self, data: Datagram, client: Address, now: float) -> Decision:
        """Route one datagram that arrived on the public socket from ``client``."""
        kind = _kind_index(data)
        if kind == OTHER:
            return self._drop("not_webrtc")
        flow = self.table.lookup_client(client)
        if flow is None:
            return self._from_unknown_address(data, kind, client, now)
        # The fast path: everything from a known address, opaque.
        size = len(data)
        flow.last_seen = now
        flow.packets_up += 1
        flow.bytes_up += size
        self._packets_up[kind] += 1
        self._bytes_up[kind] += size
        if self._learn_ssrcs and kind == RTP:
            ssrc = rtp_ssrc(data)
            if ssrc is not None and ssrc not in flow.ssrcs:
                self.table.learn_ssrc(flow, ssrc)
        elif self._remember_checks and kind == STUN:
            transaction_id = stun.request_transaction_id(data)
            if transaction_id is not None:
                self.table.remember_check(flow, transaction_id, client)
        return flow.forward_up

    def on_backend_datagram(self, flow_id: int, data: Datagram, now: float) -> Decision:
        """Route one datagram the backend sent on flow ``flow_id``'s upstream socket."""
        flow = self.table.get(flow_id)
        if flow is None:
            return self._drop("flow_closed")
        kind = _kind_index(data)
        decision: Decision = flow.forward_down
        if flow.pending and kind == STUN:
            decision = self._answer_to_pending_check(flow, data, now) or decision
            if decision.__class__ is Drop:
                return decision
        size = len(data)
        flow.packets_down += 1
        flow.bytes_down += size
        self._packets_down[kind] += 1
        self._bytes_down[kind] += size
        return decision

    def on_backend_encapsulated(self, data: Datagram, source: Address, now: float) -> Decision:
        """Route one datagram a backend sent to the internal socket (--forward encap).

        Its header names where it goes; the table is read only to follow a
        client that moved (and to count per flow), never to find a route.
        """
        if source[0] not in self._backend_hosts:
            return self._drop("untrusted_backend")
        try:
            upstream, offset = proxy_protocol.proxied_source(data)
        except proxy_protocol.ProxyHeaderError as exc:
            return self._drop(_HEADER_DROPS[exc.reason])
        kind = _kind_index(data[offset:])
        size = len(data) - offset
        flow = self.table.lookup_upstream(upstream)
        decision: Decision
        if flow is None:
            decision = Decap(upstream, offset)
        else:
            decision = flow.decap if flow.decap.offset == offset else Decap(flow.client, offset)
            if flow.pending and kind == STUN:
                answer = self._answer_to_pending_check(flow, data[offset:], now)
                if isinstance(answer, Drop):
                    return answer
                if answer is not None:
                    # The asker (an error answer), or the flow's client after the move.
                    decision = Decap(cast(ForwardDown, answer).client, offset)
            flow.packets_down += 1
            flow.bytes_down += size
        self._packets_down[kind] += 1
        self._bytes_down[kind] += size
        return decision

    def on_timer(self, now: float) -> None:
        """Close every flow idle for ``idle_timeout_s``; refresh shared-state entries when due."""
        for flow in self.table.expire(now):
            # Its shared-state entry, if any, lapses on its own at the same time.
            self.counters.closed("idle")
            self.events.append(FlowClosed(flow.id, flow.client, "idle"))
        writes = self.writes
        if writes is not None and len(self.table) and writes.refresh_due(now):
            writes.refresh(self.table, now)

    def on_upstream_open(self, flow_id: int, local: Address, now: float) -> None:
        """The shell opened flow ``flow_id``'s upstream socket at ``local``."""
        flow = self.table.get(flow_id)
        if flow is None:
            return
        self.table.set_upstream(flow, local)
        if self.writes is not None:
            self.writes.write(flow, now)

    # --- shared-state lookups (--state redis) -------------------------------------

    def on_lookup_result(self, client: Address, value: bytes | None, now: float) -> Replay:
        """The store answered ``client``'s lookup with its entry (None: no entry).

        A readable entry opens the flow (asking the shell to bind the recorded
        upstream address); then every held datagram is routed again, in order.
        """
        lookups = self.lookups
        assert lookups is not None, "lookups need --state"
        failed = False
        if value is None:
            self.counters.lookups["miss"] += 1
        else:
            try:
                record = decode_record(client, value)
            except RecordError:
                self.counters.lookups["error"] += 1
                self.counters.state_error("decode")
                failed = True
            else:
                result = "hit"
                if self.table.lookup_client(client) is None and not self._open_from_record(
                    record, now
                ):
                    # Found but not usable here (see _open_from_record): the held
                    # datagrams are replayed as if it were missing.
                    result = "refused"
                self.counters.lookups[result] += 1
        negative = self.table.lookup_client(client) is None
        held = lookups.finish(client, now, negative=negative, failed=failed)
        return self._replay(held, client, now)

    def on_lookup_failed(self, client: Address, now: float) -> Replay:
        """The store did not answer ``client``'s lookup (down, timed out)."""
        lookups = self.lookups
        assert lookups is not None, "lookups need --state"
        self.counters.lookups["error"] += 1
        self.counters.state_error("lookup")
        negative = self.table.lookup_client(client) is None
        held = lookups.finish(client, now, negative=negative, failed=True)
        return self._replay(held, client, now)

    def _replay(self, held: list[bytes], client: Address, now: float) -> Replay:
        # The address now has a flow or a negative-cache entry, so no datagram
        # here starts another lookup; STUN checks take their usual path.
        return [(data, self.on_client_datagram(data, client, now)) for data in held]

    def _open_from_record(self, record: FlowRecord, now: float) -> bool:
        """Open the flow a store entry describes; False if this relay refuses it.

        The entry must name a session our secret signed, with the backend and
        port its token names (so a store entry cannot send traffic anywhere a
        STUN check could not), a backend id configured here, and the table
        must have room.
        """
        try:
            token = route_token.decode(self.config.secret, record.session[0])
        except route_token.TokenError:
            return False
        if (token.backend_id, token.port) != (record.backend_id, record.backend[1]):
            return False
        host = self.config.backends.get(token.backend_id)
        if host is None or self.table.full or record.forward is not self.config.forward:
            # A record of the other forwarding mode names an upstream that
            # means something else (a relay socket, or a client address).
            return False
        header = b""
        if self.encap:
            header = self._header_for(record.upstream)
            if not header:
                return False
        flow = self.table.open(
            record.client, token.backend_id, (host, token.port), record.session, now
        )
        self.counters.flows_created += 1
        if self.encap:
            # The backend knows this client by the recorded address: keep naming it.
            self.table.set_upstream(flow, record.upstream, header)
            self.counters.takeovers["same"] += 1
        self.events.append(
            FlowOpened(flow.id, flow.client, token.backend_id, flow.backend, record.upstream)
        )
        if self.encap and self.writes is not None:
            self.writes.write(flow, now)
        return True

    def _header_for(self, upstream: Address) -> bytes:
        """The PROXY header naming ``upstream`` (b"" if it cannot name it: another family)."""
        assert self._public is not None, "on_listening() first"
        try:
            return proxy_protocol.encode(upstream, self._public)
        except ValueError:
            return b""

    def close_flow(self, flow_id: int, reason: str) -> None:
        """Close a flow the shell cannot serve (its upstream socket failed)."""
        flow = self.table.get(flow_id)
        if flow is None:
            return
        self.table.close(flow)
        self.counters.closed(reason)
        self.events.append(FlowClosed(flow.id, flow.client, reason))

    # --- the slow path: a datagram from an address with no flow ---------------

    def _from_unknown_address(
        self, data: Datagram, kind: int, client: Address, now: float
    ) -> Decision:
        lookups = self.lookups
        if kind == STUN:
            if lookups is not None and lookups.pending(client):
                # Behind datagrams awaiting a lookup: keep the order, and let
                # a found flow carry the check on its recorded upstream.
                return self._hold(lookups, data, client, now)
            return self._check_from_new_address(bytes(data), client, now)
        if kind == RTP and self._learn_ssrcs:
            ssrc = rtp_ssrc(data)
            flow = self.table.lookup_ssrc(ssrc) if ssrc is not None else None
            if flow is not None:
                self._move(flow, client, "ssrc", now)
                return self.on_client_datagram(data, client, now)
        if lookups is not None:
            return self._hold(lookups, data, client, now)
        return self._drop("unknown_source")

    def _look_up_first(self, data: bytes, client: Address, now: float) -> bool:
        """Hold a check that would open a flow until the shared state has been asked.

        Its client may be a flow another relay owned (a relay died and the
        consent check happened to be the first datagram to arrive here):
        opened from the store, the flow keeps the upstream address the
        backend nominated; opened from the check, it would not, and the
        backend's media would keep going to the dead relay's port.  Costs a
        new call one store round trip.  Never a drop: when the address was
        just looked up, the store is down or too many lookups are in
        flight, the check opens its flow at once, as without shared state.
        """
        lookups = self.lookups
        if lookups is None or not self.store_health.up:
            return False
        if lookups.admit(client, data, now) is not Admission.START:
            return False
        self.events.append(LookupRequested(client))
        return True

    def _hold(self, lookups: LookupBook, data: Datagram, client: Address, now: float) -> Decision:
        admission = lookups.admit(client, data, now)
        if admission is Admission.START:
            self.events.append(LookupRequested(client))
            return HELD
        if admission is Admission.HELD:
            return HELD
        return self._drop(_ADMISSION_DROPS[admission])

    def _check_from_new_address(self, data: bytes, client: Address, now: float) -> Decision:
        try:
            message = stun.parse(data)
        except stun.StunError:
            return self._drop("malformed")
        if not (message.is_request and message.method == stun.Method.BINDING):
            return self._drop("not_binding_request")
        username = message.username
        if username is None:
            return self._drop("no_username")
        server_ufrag, _, client_ufrag = username.partition(":")
        try:
            token = route_token.decode(self.config.secret, server_ufrag)
        except route_token.TokenError:
            return self._drop("bad_token")
        host = self.config.backends.get(token.backend_id)
        if host is None:
            return self._drop("unknown_backend")
        if self.config.verify_integrity:
            password = route_token.ice_password(self.config.secret, server_ufrag)
            if not stun.check_integrity(message, data, password.encode("utf-8")):
                return self._drop("bad_integrity")

        session = (server_ufrag, client_ufrag)
        known = self.table.lookup_session(session)
        if known is not None and self._policy is not RebindPolicy.OFF:
            return self._forward_check_for_move(known, message.transaction_id, data, client, now)
        if self._look_up_first(data, client, now):
            return HELD
        if known is not None:
            # The published design: the new address is simply a new flow, and
            # the backend sees a new peer.
            self.counters.rebind(self._policy.value, "new_flow")
        if self.table.full:
            # Refuse, never evict: a flood of new addresses must not cut live calls.
            return self._drop("table_full")
        flow = self.table.open(client, token.backend_id, (host, token.port), session, now)
        self.counters.flows_created += 1
        if self.encap:
            # No socket to open: the flow's path is its header, naming the client.
            self.table.set_upstream(flow, client, self._header_for(client))
            if self.writes is not None:
                self.writes.write(flow, now)
        self.events.append(FlowOpened(flow.id, client, token.backend_id, flow.backend))
        return self.on_client_datagram(data, client, now)

    def _forward_check_for_move(
        self, flow: Flow, transaction_id: bytes, data: bytes, client: Address, now: float
    ) -> Decision:
        """Send a check from ``client`` on the session's existing upstream socket.

        The backend sees its usual peer; if it accepts the check (a Binding
        success with the same transaction id), the flow moves to ``client``.

        A transaction id the flow already had from another address is a replay:
        a client that really moved sends new transactions from its new address,
        while whoever copied a check off the wire can only send it again.  The
        media server would answer the copy (it answers any check its password
        signed), so the relay refuses it first.
        """
        pending = flow.pending
        asked = pending.get(transaction_id)
        first = self.table.remember_check(flow, transaction_id, client)
        if first != client or (asked is not None and asked.client != client):
            return self._drop("replayed_check")
        for tid in [tid for tid, check in pending.items() if check.expires_at <= now]:
            del pending[tid]
        pending.pop(transaction_id, None)  # a retransmission goes to the back
        if len(pending) >= self.config.pending_checks_per_flow:
            del pending[next(iter(pending))]
        pending[transaction_id] = PendingCheck(client, now + self.config.pending_check_ttl_s)
        size = len(data)
        flow.last_seen = now
        flow.packets_up += 1
        flow.bytes_up += size
        self._packets_up[STUN] += 1
        self._bytes_up[STUN] += size
        return flow.forward_up

    def _answer_to_pending_check(self, flow: Flow, data: Datagram, now: float) -> Decision | None:
        """The decision for the backend's answer to a check from a new address, if it is one."""
        try:
            message = stun.parse(bytes(data))
        except stun.StunError:
            return None  # the backend's business; forward it as usual
        check = flow.pending.get(message.transaction_id)
        if check is None or message.is_request:
            return None
        del flow.pending[message.transaction_id]
        if check.expires_at <= now:
            return None
        if not message.is_success:
            # An error answer (role conflict, ...) belongs to the asker; no move.
            return ForwardDown(check.client)
        if check.client != flow.client and not self._move(flow, check.client, "stun_success", now):
            return self._drop("rebind_conflict")
        return flow.forward_down

    # --- helpers ---------------------------------------------------------------

    def _move(self, flow: Flow, new: Address, trigger: str, now: float) -> bool:
        old = flow.client
        if not self.table.move_client(flow, new):
            return False
        self.counters.rebind(self._policy.value, trigger)
        self.events.append(ClientMoved(flow.id, old, new, trigger))
        if self.writes is not None and flow.upstream is not None:
            self.writes.moved(flow, old, now)
        return True

    def _drop(self, reason: str) -> Drop:
        self.counters.drops[reason] += 1
        return _DROPS[reason]
