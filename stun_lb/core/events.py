"""What the router decides, as values the shell acts on (aioquic ``events.py`` style).

Two kinds of output:

* a **decision** about the datagram just handed in, returned by the call:
  :class:`ForwardUp`, :class:`ForwardDown`, :class:`Decap`, :class:`Drop` or
  :class:`Held`.  The datagram
  itself is not repeated inside the decision: the shell still holds it.
* **events** about the flow table, queued on the router and drained by the
  shell before it applies the decision: :class:`FlowOpened` (open an upstream
  socket), :class:`FlowClosed` (close it), :class:`ClientMoved` (log it),
  :class:`LookupRequested` (ask the shared state, off the forwarding path).

Decisions are immutable and carry no per-packet data, so the router hands out
one cached instance per flow (and per drop reason) instead of allocating on
every datagram; the hot path stays allocation-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from wire.addr import Address


@dataclass(frozen=True, slots=True)
class ForwardUp:
    """Send the datagram to the backend on flow ``flow_id``'s upstream socket."""

    flow_id: int


@dataclass(frozen=True, slots=True)
class ForwardDown:
    """Send the datagram out of the public socket to ``client``."""

    client: Address


@dataclass(frozen=True, slots=True)
class Decap:
    """--forward encap: send the datagram minus its first ``offset`` bytes (the PROXY
    header) out of the public socket to ``client``."""

    client: Address
    offset: int


@dataclass(frozen=True, slots=True)
class Drop:
    """Do nothing with the datagram; the router has counted it under ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Held:
    """The router kept a copy of the datagram until a shared-state lookup answers."""


HELD = Held()

Decision = ForwardUp | ForwardDown | Decap | Drop | Held


@dataclass(frozen=True, slots=True)
class FlowOpened:
    """Open ``flow_id``'s path towards ``backend``.

    nat: a connected upstream socket.  ``upstream`` is set when the flow was
    taken over from shared state: the local address the previous relay's
    upstream socket had, which the backend nominated.  Bind to it if it is
    free, so the takeover is invisible to the backend; any address otherwise.
    encap: no socket of its own; datagrams go out of the internal socket
    behind the flow's header (``Flow.encap_header``), and ``upstream`` is the
    client address that header names.
    """

    flow_id: int
    client: Address
    backend_id: int
    backend: Address
    upstream: Address | None = None


@dataclass(frozen=True, slots=True)
class LookupRequested:
    """Ask the shared state for ``client``'s flow; answer with ``Router.on_lookup_*``."""

    client: Address


@dataclass(frozen=True, slots=True)
class FlowClosed:
    """Close ``flow_id``'s upstream socket; ``reason`` is ``idle`` or a shell error."""

    flow_id: int
    client: Address
    reason: str


@dataclass(frozen=True, slots=True)
class ClientMoved:
    """Flow ``flow_id`` now sends downstream to ``new`` instead of ``old``.

    ``trigger`` is ``stun_success`` (the backend answered a check sent from
    ``new``) or ``ssrc`` (an RTP packet from ``new`` carried a known SSRC).
    """

    flow_id: int
    old: Address
    new: Address
    trigger: str


Event = FlowOpened | FlowClosed | ClientMoved | LookupRequested
