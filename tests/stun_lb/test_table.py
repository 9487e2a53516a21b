"""The flow table's named operations, in virtual time."""

from __future__ import annotations

from stun_lb.core.events import ForwardDown
from stun_lb.core.table import MAX_SSRCS_PER_FLOW, FlowTable

A = ("192.0.2.1", 1000)
B = ("192.0.2.1", 2000)
C = ("192.0.2.3", 3000)
BACKEND = ("10.0.0.1", 50000)
SESSION = ("server", "client")


def test_open_indexes_a_flow_by_address_session_and_id() -> None:
    table = FlowTable(idle_timeout_s=30.0, max_flows=10)
    flow = table.open(A, 1, BACKEND, SESSION, now=0.0)
    assert table.lookup_client(A) is flow
    assert table.lookup_session(SESSION) is flow
    assert table.get(flow.id) is flow
    assert len(table) == 1 and list(table) == [flow]
    assert table.lookup_client(B) is None and table.lookup_session(("x", "y")) is None


def test_several_flows_of_one_session_the_session_table_names_the_newest() -> None:
    table = FlowTable(idle_timeout_s=30.0, max_flows=10)
    old = table.open(A, 1, BACKEND, SESSION, now=0.0)
    new = table.open(B, 1, BACKEND, SESSION, now=1.0)
    assert table.lookup_session(SESSION) is new
    table.close(old)  # closing the older flow leaves the newer one findable
    assert table.lookup_session(SESSION) is new
    assert table.lookup_client(A) is None and table.lookup_client(B) is new


def test_move_client_updates_the_address_table_and_the_downstream_decision() -> None:
    table = FlowTable(idle_timeout_s=30.0, max_flows=10)
    flow = table.open(A, 1, BACKEND, SESSION, now=0.0)
    other = table.open(C, 1, BACKEND, ("s2", "c2"), now=0.0)

    assert table.move_client(flow, B)
    assert table.lookup_client(B) is flow and table.lookup_client(A) is None
    assert flow.client == B and flow.forward_down == ForwardDown(B)
    assert not table.move_client(flow, C)  # C belongs to another flow
    assert table.lookup_client(C) is other and flow.client == B
    assert table.move_client(flow, B)  # a move onto its own address is a no-op


def test_expiry_is_lazy_a_flow_with_recent_traffic_survives_its_first_deadline() -> None:
    table = FlowTable(idle_timeout_s=10.0, max_flows=10)
    quiet = table.open(A, 1, BACKEND, SESSION, now=0.0)
    busy = table.open(B, 1, BACKEND, ("s2", "c2"), now=0.0)
    busy.last_seen = 8.0
    assert table.next_expiry() == 10.0

    assert table.expire(9.9) == []
    assert table.expire(10.0) == [quiet]
    assert table.next_expiry() == 18.0  # busy's real deadline
    assert table.expire(18.0) == [busy]
    assert len(table) == 0 and table.next_expiry() is None


def test_a_flow_closed_early_leaves_only_a_harmless_heap_entry() -> None:
    table = FlowTable(idle_timeout_s=10.0, max_flows=10)
    flow = table.open(A, 1, BACKEND, SESSION, now=0.0)
    table.close(flow)
    table.close(flow)  # idempotent
    assert table.expire(10.0) == []
    assert table.next_expiry() is None


def test_full_counts_open_flows() -> None:
    table = FlowTable(idle_timeout_s=10.0, max_flows=2)
    table.open(A, 1, BACKEND, SESSION, now=0.0)
    assert not table.full
    flow = table.open(B, 1, BACKEND, SESSION, now=0.0)
    assert table.full
    table.close(flow)
    assert not table.full


def test_ssrcs_first_claim_wins_are_bounded_and_forgotten_on_close() -> None:
    table = FlowTable(idle_timeout_s=10.0, max_flows=10)
    first = table.open(A, 1, BACKEND, SESSION, now=0.0)
    second = table.open(B, 1, BACKEND, ("s2", "c2"), now=0.0)
    table.learn_ssrc(first, 7)
    table.learn_ssrc(second, 7)
    assert table.lookup_ssrc(7) is first

    for ssrc in range(100, 100 + 2 * MAX_SSRCS_PER_FLOW):
        table.learn_ssrc(second, ssrc)
    assert len(second.ssrcs) == MAX_SSRCS_PER_FLOW

    table.close(first)
    assert table.lookup_ssrc(7) is None
