"""The packet-kind table agrees with wire.demux.classify everywhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stun_lb.core.counters import KINDS, kind_index
from wire.demux import classify


def test_every_two_byte_prefix_gets_classifys_kind() -> None:
    for first in range(256):
        for second in range(256):
            data = bytes((first, second))
            assert KINDS[kind_index(data)] is classify(data)


@given(st.binary(max_size=64))
def test_any_datagram_bytes_or_view(data: bytes) -> None:
    assert KINDS[kind_index(data)] is classify(data)
    assert KINDS[kind_index(memoryview(data))] is classify(data)
