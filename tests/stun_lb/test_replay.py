"""The replay attack on ``--rebind verified``, in virtual time against the router core.

Mallory has seen one of Alice's connectivity checks on the wire (same Wi-Fi, a
mirror port) and sends the very same bytes from her own address.  The check is
genuine: its route token, USERNAME and MESSAGE-INTEGRITY are Alice's, so
``--verify-integrity`` passes it.  The relay forwards a check naming a known
session on that session's upstream socket, and the media server answers every
valid check (aioice keeps no record of the requests it answered) with the
check's transaction id -- so the relay used to move Alice's flow to Mallory.
It now remembers, per flow, which address sent each recent transaction id and
refuses the same id from another one (``replayed_check``).

Each test is the attack as a story (marked ``attack``): it succeeded before
the fix and must fail now.  What the fix does not cover (a check older than
the remembered window; ``--rebind ssrc``'s RTP moves) is in
``test_what_the_fix_does_not_cover`` and docs/reliability.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.events import ClientMoved, Drop, FlowOpened, ForwardDown, ForwardUp
from stun_lb.core.router import Router
from tests.stun_lb.packets import SECRET, Session, new_tid, rtp

pytestmark = pytest.mark.attack

ALICE = ("198.51.100.7", 40000)
ALICE_MOVED = ("198.51.100.7", 40999)  # Alice after her NAT rebinds
MALLORY = ("203.0.113.66", 6666)
BACKENDS = {1: "10.0.0.1"}


def make_router(**changes: Any) -> Router:
    settings: dict[str, Any] = {"rebind": RebindPolicy.VERIFIED, "verify_integrity": True}
    settings.update(changes)
    return Router(replace(RelayConfig(), backends=BACKENDS, secret=SECRET, **settings))


def alice_calls(router: Router, session: Session) -> int:
    router.on_client_datagram(session.check(), ALICE, 0.0)
    [opened] = router.pop_events()
    assert isinstance(opened, FlowOpened)
    return opened.flow_id


@pytest.mark.parametrize("policy", [RebindPolicy.VERIFIED, RebindPolicy.SSRC])
def test_a_replayed_consent_check_does_not_move_alices_flow(policy: RebindPolicy) -> None:
    router = make_router(rebind=policy)
    session = Session()
    flow_id = alice_calls(router, session)

    # t=5: Alice's consent check, from her own address: the fast path.
    tid = new_tid()
    check = session.check(tid)
    assert router.on_client_datagram(check, ALICE, 5.0) == ForwardUp(flow_id)
    # t=5.001: Mallory sends the same bytes from her address: refused, not forwarded.
    assert router.on_client_datagram(check, MALLORY, 5.001) == Drop("replayed_check")
    # The backend answers Alice's check; the answer goes to Alice, nothing moves.
    assert router.on_backend_datagram(flow_id, session.success(tid), 5.002) == ForwardDown(ALICE)

    assert router.pop_events() == []
    assert router.on_backend_datagram(flow_id, rtp(), 5.1) == ForwardDown(ALICE)
    assert router.counters.drops["replayed_check"] == 1


def test_a_replay_of_alices_own_move_check_does_not_take_the_flow_from_her() -> None:
    router = make_router()
    session = Session()
    flow_id = alice_calls(router, session)

    # t=10: Alice's NAT rebinds; her check from the new port moves the flow there.
    tid = new_tid()
    check = session.check(tid)
    router.on_client_datagram(check, ALICE_MOVED, 10.0)
    router.on_backend_datagram(flow_id, session.success(tid), 10.001)
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_MOVED, "stun_success")]

    # t=10.5: Mallory replays that check.
    assert router.on_client_datagram(check, MALLORY, 10.5) == Drop("replayed_check")
    assert router.pop_events() == []
    assert router.on_backend_datagram(flow_id, rtp(), 10.6) == ForwardDown(ALICE_MOVED)


def test_a_replay_racing_alices_move_check_does_not_win_the_move() -> None:
    router = make_router()
    session = Session()
    flow_id = alice_calls(router, session)

    tid = new_tid()
    check = session.check(tid)
    router.on_client_datagram(check, ALICE_MOVED, 10.0)
    assert router.on_client_datagram(check, MALLORY, 10.0005) == Drop("replayed_check")
    router.on_backend_datagram(flow_id, session.success(tid), 10.001)

    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_MOVED, "stun_success")]


def test_retransmissions_from_the_same_new_address_still_move_the_flow() -> None:
    router = make_router()
    session = Session()
    flow_id = alice_calls(router, session)

    tid = new_tid()
    check = session.check(tid)
    for at in (10.0, 10.5, 11.5):  # the first two were lost on the way back
        assert router.on_client_datagram(check, ALICE_MOVED, at) == ForwardUp(flow_id)
    router.on_backend_datagram(flow_id, session.success(tid), 11.501)
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_MOVED, "stun_success")]
    assert router.counters.drops["replayed_check"] == 0


def test_the_memory_is_bounded_per_flow() -> None:
    router = make_router(checks_per_flow=4)
    session = Session()
    flow_id = alice_calls(router, session)
    tids = [new_tid() for _ in range(10)]
    for at, tid in enumerate(tids, start=1):
        router.on_client_datagram(session.check(tid), ALICE, float(at))
    flow = router.table.get(flow_id)
    assert flow is not None and list(flow.checks) == tids[-4:]
    assert set(flow.checks.values()) == {ALICE}


def test_what_the_fix_does_not_cover() -> None:
    """A check older than the remembered window still moves the flow: STUN carries
    no freshness and the media server answers it.  Stated here so a change in
    either direction is seen."""
    router = make_router(checks_per_flow=4)
    session = Session()
    flow_id = alice_calls(router, session)
    old_tid = new_tid()
    old_check = session.check(old_tid)
    router.on_client_datagram(old_check, ALICE, 1.0)
    for at in range(2, 7):  # five newer consent checks push it out of memory
        router.on_client_datagram(session.check(), ALICE, float(at))

    assert router.on_client_datagram(old_check, MALLORY, 7.0) == ForwardUp(flow_id)
    router.on_backend_datagram(flow_id, session.success(old_tid), 7.001)
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, MALLORY, "stun_success")]


def test_rebind_off_keeps_no_memory_and_opens_a_new_flow_as_published() -> None:
    router = make_router(rebind=RebindPolicy.OFF)
    session = Session()
    flow_id = alice_calls(router, session)
    check = session.check()
    router.on_client_datagram(check, ALICE, 5.0)
    flow = router.table.get(flow_id)
    assert flow is not None and flow.checks == {}
    # The published design's own exposure: a replay opens Mallory a flow of her own,
    # and the backend keeps sending to the peer it nominated (Alice's flow).
    decision = router.on_client_datagram(check, MALLORY, 5.001)
    assert isinstance(decision, ForwardUp) and decision.flow_id != flow_id
    assert router.on_backend_datagram(flow_id, rtp(), 5.1) == ForwardDown(ALICE)
