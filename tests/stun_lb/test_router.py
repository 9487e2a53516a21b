"""The router in virtual time: no sockets, ``now`` starts at 0.0 and steps by hand.

Each rebind test reads as a story: who sends what from where, and where the
relay sends it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.counters import DOWN, KINDS, UP
from stun_lb.core.events import ClientMoved, Drop, FlowClosed, FlowOpened, ForwardDown, ForwardUp
from stun_lb.core.router import Router
from tests.stun_lb.packets import (
    SECRET,
    Session,
    dtls_record,
    new_tid,
    rtcp_rr,
    rtp,
    stun_binding_error,
)
from wire import stun
from wire.demux import PacketKind

ALICE = ("198.51.100.7", 40000)
ALICE_REBOUND = ("198.51.100.7", 40999)  # the same client after a NAT rebinding
MALLORY = ("203.0.113.66", 6666)
BACKENDS = {1: "10.0.0.1", 2: "10.0.0.2"}


def make_router(**changes: Any) -> Router:
    return Router(replace(RelayConfig(), backends=BACKENDS, secret=SECRET, **changes))


def open_flow(router: Router, session: Session, client: tuple[str, int], now: float = 0.0) -> int:
    decision = router.on_client_datagram(session.check(), client, now)
    events = router.pop_events()
    assert len(events) == 1 and isinstance(events[0], FlowOpened), events
    assert decision == ForwardUp(events[0].flow_id)
    return events[0].flow_id


def sent(router: Router, direction: int, kind: PacketKind) -> int:
    return router.counters.packets[direction][KINDS.index(kind)]


# --- routing a new session ------------------------------------------------------


def test_first_check_opens_a_flow_to_the_backend_and_port_in_the_token() -> None:
    router = make_router()
    session = Session(backend_id=2, port=50123)

    decision = router.on_client_datagram(session.check(), ALICE, 0.0)

    [event] = router.pop_events()
    assert isinstance(event, FlowOpened)
    assert event == FlowOpened(event.flow_id, ALICE, 2, ("10.0.0.2", 50123))
    assert decision == ForwardUp(event.flow_id)
    flow = router.table.get(event.flow_id)
    assert flow is not None and flow.session == session.key
    assert router.counters.flows_created == 1
    assert sent(router, UP, PacketKind.STUN) == 1


def test_everything_from_a_known_address_takes_the_fast_path() -> None:
    router = make_router()
    flow_id = open_flow(router, Session(), ALICE)

    for datagram in (dtls_record(), rtp(), rtcp_rr(), Session().check()):
        assert router.on_client_datagram(datagram, ALICE, 1.0) == ForwardUp(flow_id)
    assert router.pop_events() == []

    assert [sent(router, UP, kind) for kind in KINDS] == [2, 1, 1, 1, 0]
    flow = router.table.get(flow_id)
    assert flow is not None and flow.packets_up == 5 and flow.last_seen == 1.0


def test_fast_path_decisions_are_made_once_per_flow() -> None:
    router = make_router()
    open_flow(router, Session(), ALICE)
    first = router.on_client_datagram(rtp(seq=1), ALICE, 0.1)
    assert router.on_client_datagram(rtp(seq=2), ALICE, 0.2) is first


def test_backend_datagrams_go_to_the_flows_client() -> None:
    router = make_router()
    flow_id = open_flow(router, Session(), ALICE)

    assert router.on_backend_datagram(flow_id, rtp(ssrc=7), 0.5) == ForwardDown(ALICE)
    assert sent(router, DOWN, PacketKind.RTP) == 1
    flow = router.table.get(flow_id)
    assert flow is not None and (flow.packets_down, flow.bytes_down) == (1, len(rtp()))


def test_two_sessions_from_two_clients_get_two_flows() -> None:
    router = make_router()
    first = open_flow(router, Session(backend_id=1, port=50001), ALICE)
    second = open_flow(router, Session(backend_id=2, port=50002), MALLORY)
    assert first != second
    assert router.on_client_datagram(rtp(), MALLORY, 1.0) == ForwardUp(second)
    assert router.on_backend_datagram(first, rtp(), 1.0) == ForwardDown(ALICE)


# --- what is dropped, and why ---------------------------------------------------


def test_non_stun_from_an_unknown_address_is_dropped_as_unknown_source() -> None:
    router = make_router()
    for datagram in (dtls_record(), rtp(), rtcp_rr()):
        assert router.on_client_datagram(datagram, MALLORY, 0.0) == Drop("unknown_source")
    assert router.counters.drops["unknown_source"] == 3
    assert len(router.table) == 0 and router.pop_events() == []


def test_non_webrtc_bytes_are_dropped_even_from_a_known_address() -> None:
    router = make_router()
    open_flow(router, Session(), ALICE)
    assert router.on_client_datagram(b"\x40\x00\x00\x10", ALICE, 1.0) == Drop("not_webrtc")
    assert router.on_client_datagram(b"", MALLORY, 1.0) == Drop("not_webrtc")
    assert router.counters.drops["not_webrtc"] == 2


@pytest.mark.parametrize(
    "ufrag",
    [
        "evtj",  # an ordinary random ufrag, not a token
        Session(secret=b"someone else's secret").server_ufrag,  # forged
        Session().server_ufrag[:-1] + "A",  # garbled
    ],
)
def test_a_server_ufrag_that_is_not_our_token_is_dropped_as_bad_token(ufrag: str) -> None:
    router = make_router()
    check = stun.binding_request(new_tid(), f"{ufrag}:cli1", "password")
    assert router.on_client_datagram(check, ALICE, 0.0) == Drop("bad_token")
    assert router.counters.drops["bad_token"] == 1
    assert len(router.table) == 0


def test_a_token_naming_an_unconfigured_backend_is_dropped() -> None:
    router = make_router()
    check = Session(backend_id=9).check()
    assert router.on_client_datagram(check, ALICE, 0.0) == Drop("unknown_backend")
    assert len(router.table) == 0


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x00\x01\x00\x00",  # shorter than a header
        b"\x00\x01\x00\x08" + b"\x00" * 16,  # bad magic cookie, bad length
        Session().check()[:-4],  # truncated
        Session().check() + b"\x00",  # trailing byte
    ],
)
def test_malformed_stun_is_counted_and_the_router_keeps_serving(datagram: bytes) -> None:
    router = make_router()
    assert router.on_client_datagram(datagram, ALICE, 0.0) == Drop("malformed")
    assert router.counters.drops["malformed"] == 1
    open_flow(router, Session(), ALICE, now=0.1)


def test_stun_that_is_not_a_check_cannot_open_a_flow() -> None:
    router = make_router()
    session = Session()
    indication = stun.build(stun.Method.BINDING, stun.MessageClass.INDICATION, new_tid())
    anonymous = stun.build(stun.Method.BINDING, stun.MessageClass.REQUEST, new_tid())
    answer = session.success(new_tid())

    assert router.on_client_datagram(indication, ALICE, 0.0) == Drop("not_binding_request")
    assert router.on_client_datagram(answer, ALICE, 0.0) == Drop("not_binding_request")
    assert router.on_client_datagram(anonymous, ALICE, 0.0) == Drop("no_username")
    assert len(router.table) == 0


def test_without_verify_integrity_the_relay_reads_only_the_username() -> None:
    router = make_router()
    session = Session()
    decision = router.on_client_datagram(session.check(password="wrong"), ALICE, 0.0)
    assert isinstance(decision, ForwardUp)


def test_verify_integrity_refuses_a_check_signed_with_the_wrong_password() -> None:
    router = make_router(verify_integrity=True)
    session = Session()

    decision = router.on_client_datagram(session.check(password="wrong"), ALICE, 0.0)

    assert decision == Drop("bad_integrity")
    assert router.counters.drops["bad_integrity"] == 1
    assert len(router.table) == 0
    open_flow(router, session, ALICE, now=0.1)  # the derived password passes


# --- idle expiry and the size bound -----------------------------------------------


def test_a_flow_expires_after_idle_timeout_of_client_silence() -> None:
    router = make_router(idle_timeout_s=30.0)
    flow_id = open_flow(router, Session(), ALICE, now=0.0)
    assert router.next_deadline() == 30.0

    router.on_client_datagram(rtp(), ALICE, 10.0)  # the client is alive at t=10
    router.on_backend_datagram(flow_id, rtp(), 35.0)  # the backend talking does not count
    router.on_timer(30.0)
    assert router.pop_events() == []
    assert router.next_deadline() == 40.0

    router.on_timer(40.0)
    assert router.pop_events() == [FlowClosed(flow_id, ALICE, "idle")]
    assert len(router.table) == 0 and router.next_deadline() is None
    assert router.counters.flows_closed == {"idle": 1}

    # Afterwards the address is unknown again and the backend's socket is gone.
    assert router.on_client_datagram(rtp(), ALICE, 41.0) == Drop("unknown_source")
    assert router.on_backend_datagram(flow_id, rtp(), 41.0) == Drop("flow_closed")


def test_a_full_table_refuses_new_flows_and_never_evicts_live_ones() -> None:
    router = make_router(max_flows=2, idle_timeout_s=30.0)
    first = open_flow(router, Session(port=50001), ALICE, now=0.0)
    second = open_flow(router, Session(port=50002), ALICE_REBOUND, now=5.0)

    assert router.on_client_datagram(Session(port=50003).check(), MALLORY, 6.0) == Drop(
        "table_full"
    )
    assert router.counters.drops["table_full"] == 1
    assert router.on_client_datagram(rtp(), ALICE, 6.0) == ForwardUp(first)
    assert router.on_client_datagram(rtp(), ALICE_REBOUND, 6.0) == ForwardUp(second)

    router.on_timer(36.0)  # both silent since t=6: room again
    assert len(router.pop_events()) == 2
    open_flow(router, Session(port=50003), MALLORY, now=36.0)


def test_closing_a_flow_from_the_shell_frees_its_address() -> None:
    router = make_router()
    flow_id = open_flow(router, Session(), ALICE)
    router.close_flow(flow_id, "upstream_open_failed")
    assert router.pop_events() == [FlowClosed(flow_id, ALICE, "upstream_open_failed")]
    assert router.on_client_datagram(rtp(), ALICE, 1.0) == Drop("unknown_source")


# --- rebind stories -------------------------------------------------------------------


def test_rebind_off_a_moved_client_gets_a_new_flow_and_downstream_stays_on_the_old_address() -> (
    None
):
    router = make_router(rebind=RebindPolicy.OFF)
    session = Session()
    # Alice calls; the backend nominates the pair through flow `old`.
    old = open_flow(router, session, ALICE, now=0.0)
    # t=10: her NAT rebinds; media from the new port is unknown to the relay.
    assert router.on_client_datagram(rtp(), ALICE_REBOUND, 10.0) == Drop("unknown_source")
    # t=12: her next consent check opens a second flow, a new peer for the backend.
    new = open_flow(router, session, ALICE_REBOUND, now=12.0)
    assert new != old
    assert router.counters.rebinds == {("off", "new_flow"): 1}
    # The backend keeps sending on the pair it nominated: downstream stays on the old address.
    assert router.on_backend_datagram(old, rtp(), 13.0) == ForwardDown(ALICE)
    # The session table names the newest flow; the old one lingers until idle expiry.
    assert router.table.lookup_session(session.key) is router.table.get(new)
    router.on_timer(30.0)
    assert router.pop_events() == [FlowClosed(old, ALICE, "idle")]
    assert router.on_client_datagram(rtp(), ALICE_REBOUND, 31.0) == ForwardUp(new)


def test_rebind_verified_moves_only_on_the_success_answering_the_new_addresses_check() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session()
    flow_id = open_flow(router, session, ALICE, now=0.0)

    # Alice's NAT rebinds; her consent check from the new port goes out on the
    # session's existing upstream socket, so the backend sees its usual peer.
    tid = new_tid()
    assert router.on_client_datagram(session.check(tid), ALICE_REBOUND, 5.0) == ForwardUp(flow_id)
    assert router.pop_events() == []  # no new flow, no move yet
    # Until the backend answers, media from the new port is not trusted...
    assert router.on_client_datagram(rtp(), ALICE_REBOUND, 5.1) == Drop("unknown_source")
    # ...and downstream still goes to the old address.
    assert router.on_backend_datagram(flow_id, rtp(), 5.1) == ForwardDown(ALICE)
    # A success for ANOTHER transaction (say, Alice's old-port check) moves nothing.
    other = session.success(new_tid())
    assert router.on_backend_datagram(flow_id, other, 5.2) == ForwardDown(ALICE)
    assert router.pop_events() == []

    # The backend accepts the new port's check: the flow moves, and the answer goes there.
    assert router.on_backend_datagram(flow_id, session.success(tid), 5.3) == ForwardDown(
        ALICE_REBOUND
    )
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_REBOUND, "stun_success")]
    assert router.counters.rebinds == {("verified", "stun_success"): 1}
    # From now on both directions use the new address; the old one is unknown.
    assert router.on_client_datagram(rtp(), ALICE_REBOUND, 5.4) == ForwardUp(flow_id)
    assert router.on_backend_datagram(flow_id, rtp(), 5.4) == ForwardDown(ALICE_REBOUND)
    assert router.on_client_datagram(rtp(), ALICE, 5.5) == Drop("unknown_source")
    assert len(router.table) == 1


def test_rebind_verified_an_error_answer_goes_to_the_asker_without_a_move() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    router.on_client_datagram(session.check(tid), ALICE_REBOUND, 1.0)

    error = stun_binding_error(tid, session.password)
    assert router.on_backend_datagram(flow_id, error, 1.1) == ForwardDown(ALICE_REBOUND)
    assert router.pop_events() == []
    assert router.on_backend_datagram(flow_id, rtp(), 1.2) == ForwardDown(ALICE)


def test_rebind_verified_a_late_answer_moves_nothing() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED, pending_check_ttl_s=5.0)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    router.on_client_datagram(session.check(tid), ALICE_REBOUND, 1.0)

    assert router.on_backend_datagram(flow_id, session.success(tid), 6.5) == ForwardDown(ALICE)
    assert router.pop_events() == []


def test_rebind_verified_keeps_a_bounded_number_of_pending_checks() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED, pending_checks_per_flow=4)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tids = [new_tid() for _ in range(6)]
    for port, tid in enumerate(tids, start=41000):
        router.on_client_datagram(session.check(tid), ("198.51.100.7", port), 1.0)
    flow = router.table.get(flow_id)
    assert flow is not None and list(flow.pending) == tids[2:]


def test_rebind_verified_does_not_move_onto_an_address_another_flow_took() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session(port=50001)
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    router.on_client_datagram(session.check(tid), ALICE_REBOUND, 1.0)
    # Before the backend answers, that address starts a session of its own.
    open_flow(router, Session(port=50002, client_ufrag="cli2"), ALICE_REBOUND, now=1.1)

    assert router.on_backend_datagram(flow_id, session.success(tid), 1.2) == Drop("rebind_conflict")
    assert router.on_backend_datagram(flow_id, rtp(), 1.3) == ForwardDown(ALICE)


def test_rebind_ssrc_moves_on_an_rtp_packet_carrying_the_clients_known_ssrc() -> None:
    router = make_router(rebind=RebindPolicy.SSRC)
    session = Session()
    flow_id = open_flow(router, session, ALICE, now=0.0)
    assert router.on_client_datagram(rtp(ssrc=0xCAFE), ALICE, 0.1) == ForwardUp(flow_id)

    # An SSRC nobody sent before moves nothing.
    assert router.on_client_datagram(rtp(ssrc=0xBEEF), ALICE_REBOUND, 1.0) == Drop("unknown_source")
    # Alice's own SSRC from her new port: the flow moves at once, no STUN needed.
    assert router.on_client_datagram(rtp(ssrc=0xCAFE), ALICE_REBOUND, 1.1) == ForwardUp(flow_id)
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_REBOUND, "ssrc")]
    assert router.counters.rebinds == {("ssrc", "ssrc"): 1}
    assert router.on_backend_datagram(flow_id, rtp(), 1.2) == ForwardDown(ALICE_REBOUND)


def test_rebind_ssrc_also_moves_on_a_verified_check() -> None:
    router = make_router(rebind=RebindPolicy.SSRC)
    session = Session()
    flow_id = open_flow(router, session, ALICE)
    tid = new_tid()
    assert router.on_client_datagram(session.check(tid), ALICE_REBOUND, 1.0) == ForwardUp(flow_id)
    assert router.on_backend_datagram(flow_id, session.success(tid), 1.1) == ForwardDown(
        ALICE_REBOUND
    )
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_REBOUND, "stun_success")]


def test_only_rebind_ssrc_trusts_ssrcs() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    open_flow(router, Session(), ALICE)
    router.on_client_datagram(rtp(ssrc=0xCAFE), ALICE, 0.1)
    assert router.on_client_datagram(rtp(ssrc=0xCAFE), ALICE_REBOUND, 1.0) == Drop("unknown_source")


# --- hostile input ------------------------------------------------------------------------

_CHECK = Session().check(b"fuzz-tid-000")


@given(st.binary(max_size=300))
def test_any_bytes_from_anyone_get_a_decision_never_an_exception(data: bytes) -> None:
    router = make_router(rebind=RebindPolicy.SSRC, verify_integrity=True)
    decision = router.on_client_datagram(data, MALLORY, 0.0)
    assert isinstance(decision, Drop | ForwardUp)


@given(st.lists(st.tuples(st.integers(0, len(_CHECK) - 1), st.integers(0, 255)), max_size=8))
def test_a_mutated_check_gets_a_decision_never_an_exception(
    edits: list[tuple[int, int]],
) -> None:
    data = bytearray(_CHECK)
    for position, value in edits:
        data[position] = value
    for policy in RebindPolicy:
        router = make_router(rebind=policy, verify_integrity=True)
        flow_id = open_flow(router, Session(), ALICE)
        assert isinstance(router.on_client_datagram(bytes(data), MALLORY, 1.0), Drop | ForwardUp)
        assert isinstance(router.on_backend_datagram(flow_id, bytes(data), 1.0), ForwardDown)
