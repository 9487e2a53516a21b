"""wire.demux (RFC 7983 first-byte classes, the RTP SSRC) and the relay's table of it."""

from __future__ import annotations

from fuzz.target import DATAGRAM_DIRS, Target
from stun_lb.core.counters import KINDS, kind_index
from wire.demux import PacketKind, classify, rtp_ssrc


def one_input(data: bytes) -> None:
    kind = classify(data)
    # The relay's precomputed table must agree with the rule it was built from.
    assert KINDS[kind_index(data)] is kind
    assert KINDS[kind_index(memoryview(data))] is kind
    ssrc = rtp_ssrc(data)
    assert (ssrc is None) == (len(data) < 12)
    if kind is PacketKind.RTCP:
        assert 192 <= data[1] <= 223


TARGET = Target(
    name="demux",
    about="RFC 7983 first-byte demux, RTP SSRC, the relay's kind table",
    one_input=one_input,
    seed_dirs=DATAGRAM_DIRS,
    instrument=("wire", "stun_lb.core"),
)
