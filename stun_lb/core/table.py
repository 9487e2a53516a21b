"""The flow table: flows indexed by client address and by ICE session.

Two explicit tables with named operations, as pion's UDP mux keeps them:

* **by client address** (canonical ``(host, port)``): the fast path; every
  datagram from a known client is routed by one dict lookup;
* **by session** (server ufrag, client ufrag): how a STUN check from a new
  address finds the session it names (rebind ``verified``/``ssrc``).  Under
  rebind ``off`` one session may own several flows (one per client address);
  this table then names the newest.

A third, smaller index maps RTP SSRCs seen from a flow's client to the flow,
for rebind ``ssrc``.  A fourth maps each flow's **upstream** address -- the
peer the backend knows the flow by: the relay's upstream socket (``nat``), or
the client address the PROXY header names (``encap``) -- to the flow; under
encap a reply is routed by it once the client has moved (rebind
``verified``/``ssrc``).

Idle expiry reads one clock passed in by the caller.  Rather than a timer per
flow, the table keeps a heap of ``(deadline, flow id)`` that may run early: a
popped entry whose flow saw traffic since is pushed back with its real
deadline.  A datagram therefore costs one float assignment, and each flow
costs at most one heap operation per idle period.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stun_lb.core.events import Decap, ForwardDown, ForwardUp
from wire.addr import Address

SessionKey = tuple[str, str]  # (server ufrag, client ufrag)

# A voice call shows one or two SSRCs per direction; a client announcing more
# is noise or abuse and must not grow the index without bound.
MAX_SSRCS_PER_FLOW = 16


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """A check from ``client`` forwarded on a flow, awaiting the backend's answer."""

    client: Address
    expires_at: float


@dataclass(slots=True, eq=False)
class Flow:
    id: int
    client: Address
    backend_id: int
    backend: Address
    session: SessionKey
    created: float
    # The last datagram FROM the client: what idle expiry reads.  A backend
    # still sending to a vanished client must not keep its entry alive, and a
    # live WebRTC client sends consent checks every ~5 s whatever it does.
    last_seen: float
    packets_up: int = 0
    bytes_up: int = 0
    packets_down: int = 0
    bytes_down: int = 0
    ssrcs: set[int] = field(default_factory=set)
    # transaction id -> the new address the check came from (rebind verified/ssrc)
    pending: dict[bytes, PendingCheck] = field(default_factory=dict)
    # The transaction ids of the newest checks forwarded on this flow, each with
    # the address it came from, oldest first (rebind verified/ssrc): a check
    # replayed from another address is refused (see Router._forward_check_for_move).
    checks: dict[bytes, Address] = field(default_factory=dict)
    # The peer address the backend sees (and what a shared-state entry records):
    # nat, the relay's end of the upstream socket once the shell has opened it;
    # encap, the client address the header names (the client's first address:
    # a verified move keeps it, so the backend sees no change).
    upstream: Address | None = None
    # encap: the PROXY v2 header every datagram of this flow goes out behind.
    encap_header: bytes = b""
    # When this flow's shared-state entry was last queued for writing
    # (--state redis); before any write, earlier than any clock reading.
    state_written_at: float = -math.inf
    # The router's decisions for this flow, made once (see events.py).
    forward_up: ForwardUp = field(init=False)
    forward_down: ForwardDown = field(init=False)
    decap: Decap = field(init=False)

    def __post_init__(self) -> None:
        self.forward_up = ForwardUp(self.id)
        self.forward_down = ForwardDown(self.client)
        self.decap = Decap(self.client, 0)


class FlowTable:
    def __init__(self, idle_timeout_s: float, max_flows: int, checks_per_flow: int = 32) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_flows = max_flows
        self.checks_per_flow = checks_per_flow
        self._flows: dict[int, Flow] = {}
        self._by_client: dict[Address, Flow] = {}
        self._by_session: dict[SessionKey, Flow] = {}
        self._by_ssrc: dict[int, Flow] = {}
        self._by_upstream: dict[Address, Flow] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._next_id = 1
        # The fast path's one lookup, bound straight to the dict: a wrapper
        # method would cost as much as the lookup itself.
        self.lookup_client: Callable[[Address], Flow | None] = self._by_client.get
        self.get: Callable[[int], Flow | None] = self._flows.get
        self.lookup_upstream: Callable[[Address], Flow | None] = self._by_upstream.get

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self._flows.values()))

    @property
    def full(self) -> bool:
        return len(self._flows) >= self.max_flows

    def lookup_session(self, session: SessionKey) -> Flow | None:
        return self._by_session.get(session)

    def lookup_ssrc(self, ssrc: int) -> Flow | None:
        return self._by_ssrc.get(ssrc)

    def open(
        self,
        client: Address,
        backend_id: int,
        backend: Address,
        session: SessionKey,
        now: float,
    ) -> Flow:
        """A new flow for ``client``; the caller checked :attr:`full` and the address."""
        assert client not in self._by_client, "open() on an address that has a flow"
        assert not self.full, "open() on a full table"
        flow = Flow(self._next_id, client, backend_id, backend, session, now, now)
        self._next_id += 1
        self._flows[flow.id] = flow
        self._by_client[client] = flow
        self._by_session[session] = flow
        heapq.heappush(self._deadlines, (now + self.idle_timeout_s, flow.id))
        return flow

    def move_client(self, flow: Flow, new: Address) -> bool:
        """Point ``flow`` (and the address table) at ``new``; False if another flow has it."""
        owner = self._by_client.get(new)
        if owner is flow:
            return True
        if owner is not None:
            return False
        del self._by_client[flow.client]
        self._by_client[new] = flow
        flow.client = new
        flow.forward_down = ForwardDown(new)
        flow.decap = Decap(new, flow.decap.offset)
        return True

    def set_upstream(self, flow: Flow, upstream: Address, header: bytes = b"") -> None:
        """Record the peer address the backend knows ``flow`` by (and its encap header)."""
        if flow.upstream is not None and self._by_upstream.get(flow.upstream) is flow:
            del self._by_upstream[flow.upstream]
        flow.upstream = upstream
        self._by_upstream[upstream] = flow
        flow.encap_header = header
        flow.decap = Decap(flow.client, len(header))

    def remember_check(self, flow: Flow, transaction_id: bytes, source: Address) -> Address:
        """Record that ``source`` sent check ``transaction_id``; return who sent it first.

        Only the newest :attr:`checks_per_flow` are kept: a retransmission keeps
        its place, a new transaction pushes out the oldest.
        """
        checks = flow.checks
        first = checks.get(transaction_id)
        if first is not None:
            return first
        if len(checks) >= self.checks_per_flow:
            del checks[next(iter(checks))]
        checks[transaction_id] = source
        return source

    def learn_ssrc(self, flow: Flow, ssrc: int) -> None:
        """Remember that ``flow``'s client sends ``ssrc``; the first flow to claim one keeps it."""
        if len(flow.ssrcs) >= MAX_SSRCS_PER_FLOW:
            return
        flow.ssrcs.add(ssrc)
        self._by_ssrc.setdefault(ssrc, flow)

    def close(self, flow: Flow) -> None:
        if self._flows.pop(flow.id, None) is None:
            return
        if self._by_client.get(flow.client) is flow:
            del self._by_client[flow.client]
        if self._by_session.get(flow.session) is flow:
            del self._by_session[flow.session]
        for ssrc in flow.ssrcs:
            if self._by_ssrc.get(ssrc) is flow:
                del self._by_ssrc[ssrc]
        if flow.upstream is not None and self._by_upstream.get(flow.upstream) is flow:
            del self._by_upstream[flow.upstream]

    def expire(self, now: float) -> list[Flow]:
        """Close and return every flow whose client has been silent for the idle timeout."""
        expired: list[Flow] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, flow_id = heapq.heappop(deadlines)
            flow = self._flows.get(flow_id)
            if flow is None:
                continue  # closed for another reason; its entry was left behind
            deadline = flow.last_seen + self.idle_timeout_s
            if deadline <= now:
                self.close(flow)
                expired.append(flow)
            else:
                heapq.heappush(deadlines, (deadline, flow_id))
        return expired

    def next_expiry(self) -> float | None:
        """When :meth:`expire` may next have work (possibly early, never late)."""
        return self._deadlines[0][0] if self._deadlines else None
