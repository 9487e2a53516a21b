"""The router with shared state (--state redis), in virtual time: no sockets, no Redis.

The shell's part is played by hand: it answers LookupRequested events with
``on_lookup_result`` / ``on_lookup_failed`` and reports upstream sockets with
``on_upstream_open``; the router says what to send and what to write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.events import (
    HELD,
    Drop,
    FlowOpened,
    ForwardUp,
    LookupRequested,
)
from stun_lb.core.router import Router
from stun_lb.core.state import Delete, FlowRecord, Put, decode_record, encode_record, record_key
from tests.stun_lb.packets import SECRET, Session, new_tid, rtp
from wire import stun

ALICE = ("198.51.100.7", 40000)
ALICE_REBOUND = ("198.51.100.7", 40999)
MALLORY = ("203.0.113.66", 6666)
BACKENDS = {1: "10.0.0.1", 2: "10.0.0.2"}
OLD_UPSTREAM = ("10.0.0.100", 61000)  # the dead relay's end of the flow's upstream socket


def make_router(**changes: Any) -> Router:
    config = replace(
        RelayConfig(),
        backends=BACKENDS,
        secret=SECRET,
        state_url="redis://127.0.0.1:6379/0",
        **changes,
    )
    return Router(config)


def stored(session: Session, client: tuple[str, int] = ALICE) -> bytes:
    """The entry another relay wrote for ``client``'s flow of ``session``."""
    return encode_record(
        FlowRecord(
            client,
            session.backend_id,
            (BACKENDS[session.backend_id], session.port),
            session.key,
            OLD_UPSTREAM,
        )
    )


# --- taking a flow over ----------------------------------------------------------------


def test_media_from_an_unknown_address_is_held_while_one_lookup_runs() -> None:
    router = make_router()
    assert router.on_client_datagram(rtp(seq=1), ALICE, 0.0) is HELD
    assert router.on_client_datagram(rtp(seq=2), ALICE, 0.0) is HELD
    assert router.pop_events() == [LookupRequested(ALICE)]  # one lookup, not two
    assert router.counters.drops["unknown_source"] == 0


def test_a_found_entry_opens_the_flow_on_the_recorded_upstream_and_replays_in_order() -> None:
    router = make_router()
    session = Session(backend_id=2, port=50123)
    router.on_client_datagram(rtp(seq=1), ALICE, 0.0)
    router.on_client_datagram(rtp(seq=2), ALICE, 0.01)
    check = session.check()
    assert router.on_client_datagram(check, ALICE, 0.02) is HELD  # a check queues behind
    router.pop_events()

    replay = router.on_lookup_result(ALICE, stored(session), 0.03)

    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened)
    assert opened == FlowOpened(opened.flow_id, ALICE, 2, ("10.0.0.2", 50123), OLD_UPSTREAM)
    assert replay == [
        (rtp(seq=1), ForwardUp(opened.flow_id)),
        (rtp(seq=2), ForwardUp(opened.flow_id)),
        (check, ForwardUp(opened.flow_id)),
    ]
    assert router.counters.lookups["hit"] == 1 and router.counters.flows_created == 1
    # From now on the address takes the fast path.
    assert router.on_client_datagram(rtp(seq=3), ALICE, 0.04) == ForwardUp(opened.flow_id)


def test_a_miss_drops_the_held_media_and_remembers_the_address_briefly() -> None:
    router = make_router(negative_ttl_s=1.0)
    router.on_client_datagram(rtp(seq=1), MALLORY, 0.0)
    router.on_client_datagram(rtp(seq=2), MALLORY, 0.0)
    router.pop_events()

    assert router.on_lookup_result(MALLORY, None, 0.01) == [
        (rtp(seq=1), Drop("unknown_source")),
        (rtp(seq=2), Drop("unknown_source")),
    ]
    assert router.on_client_datagram(rtp(seq=3), MALLORY, 0.5) == Drop("unknown_source")
    assert router.pop_events() == []  # no second lookup within the negative ttl
    assert router.on_client_datagram(rtp(seq=4), MALLORY, 1.5) is HELD
    assert router.pop_events() == [LookupRequested(MALLORY)]
    assert router.counters.lookups["miss"] == 1
    assert router.counters.drops["unknown_source"] == 3


def test_a_check_held_behind_a_miss_still_opens_its_flow_the_usual_way() -> None:
    router = make_router()
    session = Session()
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.on_client_datagram(session.check(), ALICE, 0.0)
    router.pop_events()

    replay = router.on_lookup_result(ALICE, None, 0.01)

    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened) and opened.upstream is None  # any port: a new flow
    assert [decision for _, decision in replay] == [
        Drop("unknown_source"),
        ForwardUp(opened.flow_id),
    ]


def test_a_check_that_would_open_a_flow_asks_the_store_first() -> None:
    router = make_router()
    check = Session().check()
    assert router.on_client_datagram(check, ALICE, 0.0) is HELD
    assert router.pop_events() == [LookupRequested(ALICE)]

    replay = router.on_lookup_result(ALICE, None, 0.001)  # a new call: not there

    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened) and opened.upstream is None
    assert replay == [(check, ForwardUp(opened.flow_id))]


def test_a_check_arriving_first_after_a_failover_takes_the_flow_over_too() -> None:
    router = make_router()
    session = Session()
    check = session.check()
    router.on_client_datagram(check, ALICE, 0.0)
    router.pop_events()

    replay = router.on_lookup_result(ALICE, stored(session), 0.001)

    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened) and opened.upstream == OLD_UPSTREAM
    assert replay == [(check, ForwardUp(opened.flow_id))]


def test_a_check_is_never_held_when_the_store_is_down_busy_or_just_asked() -> None:
    router = make_router(max_lookups_in_flight=1)
    # Busy: the one lookup slot is taken by someone else's media.
    router.on_client_datagram(rtp(), MALLORY, 0.0)
    router.pop_events()
    assert isinstance(router.on_client_datagram(Session().check(), ALICE, 0.0), ForwardUp)
    # Just asked: the miss is remembered, the check goes through at once.
    router.on_lookup_result(MALLORY, None, 0.0)
    check = Session(client_ufrag="m").check()
    assert isinstance(router.on_client_datagram(check, MALLORY, 0.1), ForwardUp)
    # Down: the shell saw the store fail.
    router.store_health.record(False)
    check = Session(client_ufrag="b").check()
    assert isinstance(router.on_client_datagram(check, ALICE_REBOUND, 0.2), ForwardUp)
    assert router.counters.drops["lookup_busy"] == 0


def test_a_failed_lookup_drops_the_held_media_as_lookup_failed() -> None:
    router = make_router()
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.pop_events()
    assert router.on_lookup_failed(ALICE, 0.5) == [(rtp(), Drop("lookup_failed"))]
    assert router.on_client_datagram(rtp(), ALICE, 0.6) == Drop("lookup_failed")
    assert router.counters.state_errors["lookup"] == 1
    assert router.counters.lookups["error"] == 1


def test_an_unreadable_entry_counts_as_a_decode_error() -> None:
    router = make_router()
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.pop_events()
    assert router.on_lookup_result(ALICE, b"{garbage", 0.01) == [(rtp(), Drop("lookup_failed"))]
    assert router.counters.state_errors["decode"] == 1


def test_an_entry_naming_a_session_our_secret_did_not_sign_is_refused() -> None:
    router = make_router()
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.pop_events()
    forged = Session(secret=b"someone else", port=22)  # e.g. towards the backend's sshd
    replay = router.on_lookup_result(ALICE, stored(forged), 0.01)
    assert replay == [(rtp(), Drop("unknown_source"))]
    assert router.pop_events() == [] and len(router.table) == 0
    assert router.counters.lookups["refused"] == 1


def test_an_entry_whose_port_disagrees_with_its_token_is_refused() -> None:
    router = make_router()
    router.on_client_datagram(rtp(), ALICE, 0.0)
    router.pop_events()
    session = Session(port=50000)
    tampered = encode_record(FlowRecord(ALICE, 1, ("10.0.0.1", 22), session.key, OLD_UPSTREAM))
    router.on_lookup_result(ALICE, tampered, 0.01)
    assert len(router.table) == 0 and router.counters.lookups["refused"] == 1


def test_the_lookup_bounds_turn_a_flood_into_named_drops() -> None:
    router = make_router(max_lookups_in_flight=2, lookup_hold_packets=2)
    sources = [("203.0.113.1", port) for port in range(1, 5)]
    decisions = [router.on_client_datagram(rtp(), source, 0.0) for source in sources]
    assert decisions == [HELD, HELD, Drop("lookup_busy"), Drop("lookup_busy")]
    assert router.on_client_datagram(rtp(), sources[0], 0.0) is HELD
    assert router.on_client_datagram(rtp(), sources[0], 0.0) == Drop("lookup_overflow")
    assert len(router.pop_events()) == 2


def test_without_shared_state_nothing_is_held() -> None:
    router = Router(replace(RelayConfig(), backends=BACKENDS, secret=SECRET))
    assert router.lookups is None and router.writes is None
    assert router.on_client_datagram(rtp(), ALICE, 0.0) == Drop("unknown_source")
    assert router.pop_events() == []


# --- writing -------------------------------------------------------------------------------


def open_written_flow(
    router: Router, session: Session, client: tuple[str, int] = ALICE, now: float = 0.0
) -> int:
    """A new call's check: looked up (not there), opened, its upstream socket reported."""
    assert router.on_client_datagram(session.check(), client, now) is HELD
    assert router.pop_events() == [LookupRequested(client)]
    router.on_lookup_result(client, None, now)
    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened)
    router.on_upstream_open(opened.flow_id, ("10.0.0.200", 62000), now)
    return opened.flow_id


def test_a_flow_is_written_once_its_upstream_socket_is_open() -> None:
    router = make_router(idle_timeout_s=30.0)
    session = Session()
    router.on_client_datagram(session.check(), ALICE, 0.0)
    router.on_lookup_result(ALICE, None, 0.0)
    router.pop_events()
    assert router.writes is not None and router.writes.pop_ops() == []  # no upstream yet

    open_written_flow(router, session, ("192.0.2.1", 1))
    [op] = router.writes.pop_ops()
    assert isinstance(op, Put) and op.key == record_key(("192.0.2.1", 1)) and op.ttl_ms == 30_000
    record = decode_record(("192.0.2.1", 1), op.value)
    assert record.upstream == ("10.0.0.200", 62000)
    assert record.session == session.key and record.backend == ("10.0.0.1", 50000)


def test_the_timer_refreshes_active_flows_at_the_refresh_interval_not_per_packet() -> None:
    router = make_router(idle_timeout_s=30.0)
    open_written_flow(router, Session())
    assert router.writes is not None
    router.writes.pop_ops()
    assert router.next_deadline() == 0.0  # the first tick only schedules the next

    writes = 0
    now = 0.0
    while now < 60.0:
        now = round(now + 0.02, 2)  # a packet every 20 ms
        router.on_client_datagram(rtp(), ALICE, now)
        deadline = router.next_deadline()
        if deadline is not None and deadline <= now:
            router.on_timer(now)
        writes += len(router.writes.pop_ops())
    assert 5 <= writes <= 6  # every 10 s (a third of the idle timeout), 3000 packets


def test_idle_expiry_deletes_nothing_the_entry_lapses_by_itself() -> None:
    router = make_router(idle_timeout_s=30.0)
    open_written_flow(router, Session())
    assert router.writes is not None
    router.writes.pop_ops()
    router.on_timer(31.0)
    assert len(router.table) == 0
    assert router.writes.pop_ops() == []


def test_a_verified_move_deletes_the_old_entry_and_writes_the_new_one() -> None:
    router = make_router(rebind=RebindPolicy.VERIFIED)
    session = Session()
    flow_id = open_written_flow(router, session)
    assert router.writes is not None
    router.writes.pop_ops()

    tid = new_tid()
    router.on_client_datagram(session.check(tid), ALICE_REBOUND, 1.0)
    router.on_backend_datagram(flow_id, stun.binding_success(tid, ALICE, session.password), 1.0)

    ops = router.writes.pop_ops()
    assert ops[0] == Delete(record_key(ALICE))
    assert isinstance(ops[1], Put) and ops[1].key == record_key(ALICE_REBOUND)
