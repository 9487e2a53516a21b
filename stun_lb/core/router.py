"""The relay's decision maker, sans-IO: datagrams and a clock in, decisions out.

One datagram's path::

    client datagram --classify (RFC 7983)--> OTHER?            -> Drop(not_webrtc)
                    --address table-------> known client?      -> ForwardUp(flow)
                    --STUN?--> parse, USERNAME, route token, [integrity]
                                  session known and rebind on  -> ForwardUp(its flow),
                                                                  remember the transaction
                                  otherwise                    -> FlowOpened + ForwardUp
                    --RTP with a known SSRC (rebind ssrc)----- -> ClientMoved + ForwardUp
                    --anything else-------------------------- -> Drop(unknown_source)

    backend datagram on flow F ---------------------------------> ForwardDown(F's client)
        (a Binding success answering a remembered transaction first moves F
         to the address that check came from: rebind verified/ssrc)

Every bad input is a named :class:`Drop`, counted; nothing here raises on
network input.  Nothing here does I/O or reads a clock: the shell passes
``now`` and acts on the decisions and on the queued :attr:`Router.events`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.counters import DOWN, DROP_REASONS, OTHER, RTP, STUN, UP, Counters, Datagram
from stun_lb.core.counters import kind_index as _kind_index
from stun_lb.core.events import (
    ClientMoved,
    Decision,
    Drop,
    Event,
    FlowClosed,
    FlowOpened,
    ForwardDown,
)
from stun_lb.core.table import Flow, FlowTable, PendingCheck
from wire import route_token, stun
from wire.addr import Address
from wire.demux import rtp_ssrc as _rtp_ssrc_of_bytes

# rtp_ssrc reads with struct.unpack_from, which takes any buffer, so it works on
# the shell's memoryview without a copy; only its annotation says bytes.
rtp_ssrc = cast(Callable[[Datagram], int | None], _rtp_ssrc_of_bytes)

_DROPS = {reason: Drop(reason) for reason in DROP_REASONS}


class Router:
    def __init__(self, config: RelayConfig) -> None:
        """``config.backends`` maps ids to hosts as configured; the shell resolves them."""
        self.config = config
        self.table = FlowTable(config.idle_timeout_s, config.max_flows)
        self.counters = Counters()
        # Flow-table changes for the shell, in order; drained by pop_events().
        self.events: list[Event] = []
        self._policy = config.rebind
        self._learn_ssrcs = config.rebind is RebindPolicy.SSRC
        self._packets_up = self.counters.packets[UP]
        self._bytes_up = self.counters.bytes[UP]
        self._packets_down = self.counters.packets[DOWN]
        self._bytes_down = self.counters.bytes[DOWN]

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def next_deadline(self) -> float | None:
        """When to call :meth:`on_timer` next, or None while there are no flows."""
        return self.table.next_expiry()

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

    def on_timer(self, now: float) -> None:
        """Close every flow idle for ``idle_timeout_s``."""
        for flow in self.table.expire(now):
            self.counters.closed("idle")
            self.events.append(FlowClosed(flow.id, flow.client, "idle"))

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
        if kind == STUN:
            return self._check_from_new_address(bytes(data), client, now)
        if kind == RTP and self._learn_ssrcs:
            ssrc = rtp_ssrc(data)
            flow = self.table.lookup_ssrc(ssrc) if ssrc is not None else None
            if flow is not None:
                self._move(flow, client, "ssrc")
                return self.on_client_datagram(data, client, now)
        return self._drop("unknown_source")

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
        if known is not None:
            if self._policy is not RebindPolicy.OFF:
                return self._forward_check_for_move(
                    known, message.transaction_id, data, client, now
                )
            # The published design: the new address is simply a new flow, and
            # the backend sees a new peer.
            self.counters.rebind(self._policy.value, "new_flow")
        if self.table.full:
            # Refuse, never evict: a flood of new addresses must not cut live calls.
            return self._drop("table_full")
        flow = self.table.open(client, token.backend_id, (host, token.port), session, now)
        self.counters.flows_created += 1
        self.events.append(FlowOpened(flow.id, client, token.backend_id, flow.backend))
        return self.on_client_datagram(data, client, now)

    def _forward_check_for_move(
        self, flow: Flow, transaction_id: bytes, data: bytes, client: Address, now: float
    ) -> Decision:
        """Send a check from ``client`` on the session's existing upstream socket.

        The backend sees its usual peer; if it accepts the check (a Binding
        success with the same transaction id), the flow moves to ``client``.
        """
        pending = flow.pending
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
        if check.client != flow.client and not self._move(flow, check.client, "stun_success"):
            return self._drop("rebind_conflict")
        return flow.forward_down

    # --- helpers ---------------------------------------------------------------

    def _move(self, flow: Flow, new: Address, trigger: str) -> bool:
        old = flow.client
        if not self.table.move_client(flow, new):
            return False
        self.counters.rebind(self._policy.value, trigger)
        self.events.append(ClientMoved(flow.id, old, new, trigger))
        return True

    def _drop(self, reason: str) -> Drop:
        self.counters.drops[reason] += 1
        return _DROPS[reason]
