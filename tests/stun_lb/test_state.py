"""Shared-state bookkeeping in virtual time: entries, refresh, lookup bounds, negative cache."""

from __future__ import annotations

import pytest

from stun_lb.core.config import ForwardMode
from stun_lb.core.state import (
    Admission,
    Delete,
    FlowRecord,
    LookupBook,
    LookupLimits,
    Put,
    RecordError,
    StoreHealth,
    WriteBook,
    decode_record,
    encode_record,
    record_key,
)
from stun_lb.core.table import FlowTable

ALICE = ("198.51.100.7", 40000)
BOB = ("198.51.100.8", 40000)
BACKEND = ("10.0.0.1", 50000)
UPSTREAM = ("10.0.0.100", 61000)
RECORD = FlowRecord(ALICE, 1, BACKEND, ("srv", "cli"), UPSTREAM)
LIMITS = LookupLimits(
    hold_packets=3, max_in_flight=2, hold_bytes=1000, negative_ttl_s=1.0, negative_cache_size=4
)


# --- the entry ---------------------------------------------------------------------


def test_an_entry_round_trips_and_is_keyed_by_the_client_address() -> None:
    assert decode_record(ALICE, encode_record(RECORD)) == RECORD
    assert record_key(ALICE) == "rtclab:lb:flow:198.51.100.7:40000"
    assert record_key(("2001:db8::1", 5)) == "rtclab:lb:flow:[2001:db8::1]:5"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 1}',
        encode_record(RECORD).replace(b'"v":2', b'"v":3'),
        encode_record(RECORD).replace(b'"forward":"nat"', b'"forward":"tunnel"'),
        encode_record(RECORD).replace(b',"forward":"nat"', b""),  # version 2 needs it
        encode_record(RECORD).replace(b'"upstream":"10.0.0.100:61000"', b'"upstream":"x"'),
    ],
)
def test_an_unreadable_entry_raises_one_error_type(raw: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(ALICE, raw)


def test_an_encap_entry_round_trips_and_a_version_1_entry_reads_as_nat() -> None:
    encap = FlowRecord(ALICE, 1, BACKEND, ("srv", "cli"), ALICE, ForwardMode.ENCAP)
    assert decode_record(ALICE, encode_record(encap)) == encap
    assert b'"forward":"encap"' in encode_record(encap)
    # What a relay from before --forward wrote: no "forward", version 1.
    old = encode_record(RECORD).replace(b'"v":2', b'"v":1').replace(b',"forward":"nat"', b"")
    assert decode_record(ALICE, old) == RECORD and RECORD.forward is ForwardMode.NAT


def test_an_entry_stored_under_another_address_is_refused() -> None:
    with pytest.raises(RecordError, match="names"):
        decode_record(BOB, encode_record(RECORD))


# --- writing ---------------------------------------------------------------------------


def flow_table() -> FlowTable:
    return FlowTable(idle_timeout_s=30.0, max_flows=10)


def test_a_write_expires_when_the_flow_would() -> None:
    table, book = flow_table(), WriteBook(idle_timeout_s=30.0, refresh_interval_s=10.0)
    flow = table.open(ALICE, 1, BACKEND, ("srv", "cli"), now=100.0)
    flow.upstream = UPSTREAM
    flow.last_seen = 104.0
    book.write(flow, now=105.0)
    [op] = book.pop_ops()
    assert op == Put(record_key(ALICE), encode_record(RECORD), ttl_ms=29_000)
    assert book.pop_ops() == []


def test_writes_coalesce_per_key_and_a_move_deletes_the_old_entry() -> None:
    table, book = flow_table(), WriteBook(idle_timeout_s=30.0, refresh_interval_s=10.0)
    flow = table.open(ALICE, 1, BACKEND, ("srv", "cli"), now=0.0)
    flow.upstream = UPSTREAM
    book.write(flow, now=0.0)
    book.write(flow, now=1.0)
    assert len(book) == 1
    table.move_client(flow, BOB)
    book.moved(flow, ALICE, now=2.0)
    ops = book.pop_ops()
    assert ops[0] == Delete(record_key(ALICE))
    assert isinstance(ops[1], Put) and ops[1].key == record_key(BOB)
    assert decode_record(BOB, ops[1].value).upstream == UPSTREAM
    assert len(ops) == 2


def test_refresh_rewrites_only_active_flows_at_most_once_per_interval() -> None:
    table, book = flow_table(), WriteBook(idle_timeout_s=30.0, refresh_interval_s=10.0)
    active = table.open(ALICE, 1, BACKEND, ("srv", "a"), now=0.0)
    idle = table.open(BOB, 1, BACKEND, ("srv", "b"), now=0.0)
    unopened = table.open(("192.0.2.9", 9), 1, BACKEND, ("srv", "c"), now=0.0)
    for flow in (active, idle):
        flow.upstream = UPSTREAM
        book.write(flow, now=0.0)
    book.pop_ops()

    active.last_seen = 5.0
    assert book.refresh(table, now=5.0) == 0  # written less than an interval ago
    assert book.next_refresh_at == 15.0
    assert book.refresh(table, now=15.0) == 1  # idle: no packet since its write
    [op] = book.pop_ops()
    assert op.key == record_key(ALICE)
    assert isinstance(op, Put) and op.ttl_ms == 20_000  # 5 + 30 - 15
    assert unopened.state_written_at < 0  # no upstream socket yet: nothing to record


def test_an_active_flows_entry_never_lapses_and_an_idle_one_lapses_with_the_flow() -> None:
    """The property refresh exists for, walked through 100 s in 0.5 s ticks."""
    table, book = flow_table(), WriteBook(idle_timeout_s=30.0, refresh_interval_s=10.0)
    flow = table.open(ALICE, 1, BACKEND, ("srv", "cli"), now=0.0)
    flow.upstream = UPSTREAM
    book.write(flow, now=0.0)
    expires_at = book.pop_ops()[0]
    assert isinstance(expires_at, Put)
    entry_expires = expires_at.ttl_ms / 1000
    writes = 1
    now = 0.0
    while now < 100.0:
        now += 0.5
        if now <= 60.0:
            flow.last_seen = now  # the client sends until t=60, then goes quiet
        if book.refresh_due(now):
            book.refresh([flow], now)
        for op in book.pop_ops():
            assert isinstance(op, Put)
            entry_expires = now + op.ttl_ms / 1000
            writes += 1
        if now <= 60.0:
            assert entry_expires > now, f"the entry of an active flow lapsed at t={now}"
    assert entry_expires == pytest.approx(60.0 + 30.0)  # with the flow, not later
    assert writes <= 1 + 60 / 10 + 1  # about one write per interval, never per packet


# --- looking up ------------------------------------------------------------------------


def test_the_first_datagram_starts_a_lookup_and_the_next_few_are_held() -> None:
    book = LookupBook(LIMITS)
    assert book.admit(ALICE, b"a", 0.0) is Admission.START
    assert book.admit(ALICE, b"b", 0.0) is Admission.HELD
    assert book.admit(ALICE, b"c", 0.0) is Admission.HELD
    assert book.admit(ALICE, b"d", 0.0) is Admission.OVERFLOW
    assert book.in_flight == 1 and book.held_bytes == 3
    assert book.finish(ALICE, 0.1, negative=False, failed=False) == [b"a", b"b", b"c"]
    assert book.in_flight == 0 and book.held_bytes == 0


def test_lookups_in_flight_and_bytes_held_are_bounded() -> None:
    book = LookupBook(LIMITS)
    assert book.admit(ALICE, b"x", 0.0) is Admission.START
    assert book.admit(BOB, b"x" * 998, 0.0) is Admission.START
    assert book.admit(("192.0.2.3", 3), b"x", 0.0) is Admission.BUSY  # two in flight
    assert book.admit(ALICE, b"xx", 0.0) is Admission.OVERFLOW  # 1 + 998 + 2 > 1000 bytes
    assert book.admit(ALICE, b"x", 0.0) is Admission.HELD  # exactly 1000
    book.finish(BOB, 0.0, negative=False, failed=False)
    assert book.admit(("192.0.2.3", 3), b"x", 0.0) is Admission.START


def test_a_miss_is_remembered_for_the_negative_ttl_and_a_failure_as_a_failure() -> None:
    book = LookupBook(LIMITS)
    book.admit(ALICE, b"x", 0.0)
    book.finish(ALICE, 0.0, negative=True, failed=False)
    book.admit(BOB, b"x", 0.0)
    book.finish(BOB, 0.0, negative=True, failed=True)
    assert book.admit(ALICE, b"x", 0.5) is Admission.MISSING
    assert book.admit(BOB, b"x", 0.5) is Admission.FAILED
    assert book.in_flight == 0  # neither started a lookup
    assert book.admit(ALICE, b"x", 1.0) is Admission.START  # the ttl has passed


def test_a_found_address_is_not_remembered_as_missing() -> None:
    book = LookupBook(LIMITS)
    book.admit(ALICE, b"x", 0.0)
    book.finish(ALICE, 0.0, negative=False, failed=False)
    assert book.negative_size() == 0


def test_the_negative_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    book = LookupBook(LIMITS)
    sources = [("192.0.2.1", port) for port in range(1, 7)]
    for index, source in enumerate(sources):
        book.admit(source, b"x", index * 0.01)
        book.finish(source, index * 0.01, negative=True, failed=False)
    assert book.negative_size() == LIMITS.negative_cache_size
    assert book.admit(sources[0], b"x", 0.1) is Admission.START  # forgotten: oldest
    assert book.admit(sources[-1], b"x", 0.1) is Admission.MISSING


def test_expired_misses_are_purged_as_new_ones_arrive() -> None:
    book = LookupBook(LIMITS)
    for port in range(3):
        book.admit(("192.0.2.1", port), b"x", 0.0)
        book.finish(("192.0.2.1", port), 0.0, negative=True, failed=False)
    book.admit(ALICE, b"x", 5.0)
    book.finish(ALICE, 5.0, negative=True, failed=False)
    assert book.negative_size() == 1


def test_store_health_reports_only_changes() -> None:
    health = StoreHealth()
    assert health.up
    assert health.record(True) is False
    assert health.record(False) is True and not health.up
    assert health.record(False) is False
    assert health.record(True) is True and health.up
