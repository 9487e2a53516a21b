"""The replay attack on ``--rebind verified``, in virtual time against the router core.

Mallory has seen one of Alice's connectivity checks on the wire (same Wi-Fi, a
mirror port) and sends the very same bytes from her own address.  The check is
genuine: its route token, USERNAME and MESSAGE-INTEGRITY are Alice's, so
``--verify-integrity`` passes it.  The relay forwards it on Alice's upstream
socket; the media server answers every valid check (aioice keeps no record of
the requests it answered), and its Binding success carries the check's
transaction id -- so before the fix the relay moved Alice's flow to Mallory.

Each test is the attack as a story; they are marked ``attack``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.events import ClientMoved, ForwardDown, ForwardUp
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
    return opened.flow_id  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", [RebindPolicy.VERIFIED, RebindPolicy.SSRC])
def test_a_replayed_consent_check_moves_alices_flow_to_mallory(policy: RebindPolicy) -> None:
    router = make_router(rebind=policy)
    session = Session()
    flow_id = alice_calls(router, session)

    # t=5: Alice's consent check, from her own address: the fast path.
    tid = new_tid()
    check = session.check(tid)
    assert router.on_client_datagram(check, ALICE, 5.0) == ForwardUp(flow_id)
    # t=5.001: Mallory sends the same bytes from her address.
    router.on_client_datagram(check, MALLORY, 5.001)
    # The backend answers each copy; the answers carry the same transaction id.
    router.on_backend_datagram(flow_id, session.success(tid), 5.002)
    router.on_backend_datagram(flow_id, session.success(tid), 5.003)

    assert router.pop_events() == [ClientMoved(flow_id, ALICE, MALLORY, "stun_success")]
    assert router.on_backend_datagram(flow_id, rtp(), 5.1) == ForwardDown(MALLORY)


def test_a_replay_of_alices_own_move_check_takes_the_flow_from_her() -> None:
    router = make_router()
    session = Session()
    flow_id = alice_calls(router, session)

    # t=10: Alice's NAT rebinds; her check from the new port moves the flow there.
    tid = new_tid()
    check = session.check(tid)
    router.on_client_datagram(check, ALICE_MOVED, 10.0)
    router.on_backend_datagram(flow_id, session.success(tid), 10.001)
    assert router.pop_events() == [ClientMoved(flow_id, ALICE, ALICE_MOVED, "stun_success")]

    # t=10.5: Mallory replays that check; the backend answers it again.
    router.on_client_datagram(check, MALLORY, 10.5)
    router.on_backend_datagram(flow_id, session.success(tid), 10.501)

    assert router.pop_events() == [ClientMoved(flow_id, ALICE_MOVED, MALLORY, "stun_success")]


def test_a_replay_racing_alices_move_check_wins_the_move() -> None:
    router = make_router()
    session = Session()
    flow_id = alice_calls(router, session)

    tid = new_tid()
    check = session.check(tid)
    router.on_client_datagram(check, ALICE_MOVED, 10.0)
    router.on_client_datagram(check, MALLORY, 10.0005)  # before the backend answers
    router.on_backend_datagram(flow_id, session.success(tid), 10.001)

    assert router.pop_events() == [ClientMoved(flow_id, ALICE, MALLORY, "stun_success")]
