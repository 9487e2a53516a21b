"""The router under --forward encap, in virtual time: headers out, replies by header, each policy.

Under encap the backend sees client addresses.  Each rebind story says what
the backend is told (the address the header names) and where its replies go.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stun_lb.core.config import ForwardMode, RebindPolicy, RelayConfig
from stun_lb.core.counters import DOWN, KINDS
from stun_lb.core.events import (
    HELD,
    ClientMoved,
    Decap,
    Drop,
    FlowOpened,
    ForwardUp,
    LookupRequested,
)
from stun_lb.core.router import Router
from stun_lb.core.state import FlowRecord, encode_record
from tests.stun_lb.packets import SECRET, Session, new_tid, rtp, stun_binding_error
from wire import proxy_protocol
from wire.demux import PacketKind

ALICE = ("198.51.100.7", 40000)
ALICE_MOVED = ("198.51.100.99", 41000)  # the same caller on another network
BOB = ("192.0.2.44", 7000)
PUBLIC = ("203.0.113.10", 3478)
BACKEND = ("10.0.0.1", 50000)  # media server 1's shared socket, as the token names it
BACKENDS = {1: "10.0.0.1", 2: "10.0.0.2"}


def make_router(**changes: Any) -> Router:
    config = replace(
        RelayConfig(), backends=BACKENDS, secret=SECRET, forward=ForwardMode.ENCAP, **changes
    )
    router = Router(config)
    router.on_listening(PUBLIC, frozenset(BACKENDS.values()))
    return router


def header(client: tuple[str, int]) -> bytes:
    return proxy_protocol.encode(client, PUBLIC)


def reply(client: tuple[str, int], payload: bytes) -> bytes:
    """What the media server sends back: the header it was given, then its datagram."""
    return header(client) + payload


def open_flow(router: Router, session: Session, client: tuple[str, int], now: float = 0.0) -> int:
    decision = router.on_client_datagram(session.check(), client, now)
    [event] = router.pop_events()
    assert isinstance(event, FlowOpened) and decision == ForwardUp(event.flow_id)
    return event.flow_id


def test_a_flow_goes_out_behind_a_header_naming_its_client() -> None:
    router = make_router()
    session = Session(backend_id=1, port=BACKEND[1])
    flow_id = open_flow(router, session, ALICE)
    flow = router.table.get(flow_id)
    assert flow is not None and flow.backend == BACKEND
    assert flow.upstream == ALICE and flow.encap_header == header(ALICE)
    # Everything from Alice then takes the fast path, opaque.
    assert router.on_client_datagram(rtp(), ALICE, 0.1) == ForwardUp(flow_id)


def test_replies_go_where_their_header_says() -> None:
    router = make_router()
    flow_id = open_flow(router, Session(), ALICE)
    assert router.on_backend_encapsulated(reply(ALICE, rtp()), BACKEND, 0.2) == Decap(ALICE, 28)
    flow = router.table.get(flow_id)
    assert flow is not None and flow.packets_down == 1
    assert router.counters.packets[DOWN][KINDS.index(PacketKind.RTP)] == 1
    # No flow for that address (a restarted relay, say): it goes there all the same.
    assert router.on_backend_encapsulated(reply(BOB, rtp()), BACKEND, 0.3) == Decap(BOB, 28)
    assert router.counters.packets[DOWN][KINDS.index(PacketKind.RTP)] == 2


@pytest.mark.parametrize(
    ("data", "source", "reason"),
    [
        (reply(ALICE, rtp()), ("10.0.0.9", 50000), "untrusted_backend"),
        (reply(ALICE, rtp()), ALICE, "untrusted_backend"),
        (rtp(), BACKEND, "no_header"),
        (header(ALICE)[:12] + b"\x11" + header(ALICE)[13:] + rtp(), BACKEND, "bad_header"),
        (proxy_protocol.encode_local() + rtp(), BACKEND, "not_proxied"),
    ],
    ids=["other_host", "a_client", "bare", "version_1", "local"],
)
def test_replies_from_strangers_or_without_a_valid_header_are_dropped(
    data: bytes, source: tuple[str, int], reason: str
) -> None:
    router = make_router()
    open_flow(router, Session(), ALICE)
    assert router.on_backend_encapsulated(data, source, 1.0) == Drop(reason)
    assert router.counters.drops[reason] == 1


def test_a_client_datagram_is_never_read_as_a_header() -> None:
    # A client sending a PROXY header of its own is just bytes that are not WebRTC.
    router = make_router()
    assert router.on_client_datagram(reply(BOB, rtp()), ALICE, 0.0) == Drop("not_webrtc")
    open_flow(router, Session(), ALICE)
    assert router.on_client_datagram(reply(BOB, rtp()), ALICE, 0.1) == Drop("not_webrtc")


def test_rebind_off_the_moved_client_is_a_new_peer_and_replies_keep_the_old_address() -> None:
    router = make_router(rebind=RebindPolicy.OFF)
    session = Session()
    first = open_flow(router, session, ALICE)
    # Alice moves; her next consent check opens a second flow, naming her new address.
    second = open_flow(router, session, ALICE_MOVED, now=5.0)
    flow = router.table.get(second)
    assert flow is not None and flow.encap_header == header(ALICE_MOVED) and first != second
    # The media server answers that check to the new address ...
    assert router.on_backend_encapsulated(
        reply(ALICE_MOVED, session.success(new_tid())), BACKEND, 5.0
    ) == Decap(ALICE_MOVED, 28)
    # ... but its media stays on the pair it nominated: the old address.
    assert router.on_backend_encapsulated(reply(ALICE, rtp()), BACKEND, 5.1) == Decap(ALICE, 28)


def test_rebind_verified_the_backend_sees_no_move_and_replies_follow_the_client() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    # The check from the new address goes out on Alice's flow, behind ALICE's header:
    # the media server sees its usual peer.
    assert router.on_client_datagram(session.check(tid), ALICE_MOVED, 5.0) == ForwardUp(flow_id)
    assert router.pop_events() == []
    # Its Binding success (addressed to ALICE, the peer it knows) moves the flow.
    decision = router.on_backend_encapsulated(reply(ALICE, session.success(tid)), BACKEND, 5.01)
    assert decision == Decap(ALICE_MOVED, 28)
    [moved] = router.pop_events()
    assert moved == ClientMoved(flow_id, ALICE, ALICE_MOVED, "stun_success")
    # From now on: replies addressed to ALICE reach her new address, and her media
    # still goes out naming ALICE.
    assert router.on_backend_encapsulated(reply(ALICE, rtp()), BACKEND, 5.1) == Decap(
        ALICE_MOVED, 28
    )
    assert router.on_client_datagram(rtp(), ALICE_MOVED, 5.1) == ForwardUp(flow_id)
    flow = router.table.get(flow_id)
    assert flow is not None and flow.encap_header == header(ALICE) and flow.client == ALICE_MOVED
    assert router.on_client_datagram(rtp(), ALICE, 5.2) == Drop("unknown_source")


def test_rebind_verified_an_error_answer_goes_to_the_asker_without_a_move() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    router.on_client_datagram(session.check(tid), ALICE_MOVED, 5.0)
    decision = router.on_backend_encapsulated(
        reply(ALICE, stun_binding_error(tid, session.password)), BACKEND, 5.01
    )
    assert decision == Decap(ALICE_MOVED, 28)
    flow = router.table.get(flow_id)
    assert flow is not None and flow.client == ALICE and router.pop_events() == []


def test_rebind_ssrc_moves_on_a_known_ssrc_and_replies_follow() -> None:
    router = make_router(rebind=RebindPolicy.SSRC)
    flow_id = open_flow(router, Session(), ALICE)
    router.on_client_datagram(rtp(ssrc=0xABCD), ALICE, 0.1)
    assert router.on_client_datagram(rtp(ssrc=0xABCD, seq=2), ALICE_MOVED, 5.0) == ForwardUp(
        flow_id
    )
    [moved] = router.pop_events()
    assert moved == ClientMoved(flow_id, ALICE, ALICE_MOVED, "ssrc")
    assert router.on_backend_encapsulated(reply(ALICE, rtp()), BACKEND, 5.1) == Decap(
        ALICE_MOVED, 28
    )


# --- shared state --------------------------------------------------------------------


def test_a_stored_encap_flow_is_taken_over_naming_the_recorded_address() -> None:
    router = make_router(state_url="redis://127.0.0.1:6379/0")
    session = Session()
    # The store has Alice's flow after a verified move: she is at ALICE_MOVED, the
    # media server knows her as ALICE.
    record = FlowRecord(ALICE_MOVED, 1, BACKEND, session.key, ALICE, ForwardMode.ENCAP)
    assert router.on_client_datagram(rtp(), ALICE_MOVED, 0.0) is HELD
    assert router.pop_events() == [LookupRequested(ALICE_MOVED)]
    [(_, decision)] = router.on_lookup_result(ALICE_MOVED, encode_record(record), 0.01)
    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened) and decision == ForwardUp(opened.flow_id)
    flow = router.table.get(opened.flow_id)
    assert flow is not None and flow.encap_header == header(ALICE)
    assert router.on_backend_encapsulated(reply(ALICE, rtp()), BACKEND, 0.02) == Decap(
        ALICE_MOVED, 28
    )
    assert router.counters.lookups["hit"] == 1


def test_an_entry_of_the_other_forwarding_mode_is_refused() -> None:
    router = make_router(state_url="redis://127.0.0.1:6379/0")
    session = Session(port=BACKEND[1])
    nat_record = FlowRecord(ALICE, 1, BACKEND, session.key, ("10.0.0.200", 61000))
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.on_lookup_result(ALICE, encode_record(nat_record), 0.01)
    assert router.counters.lookups["refused"] == 1 and len(router.table) == 0
