"""PROXY protocol v2 header: the spec's layout, an independent implementation, hostile input.

The specification (HAProxy's proxy-protocol.txt, section 2.2) gives the
layout and field values but no hex dumps, so the vectors below are written
byte by byte from its text, each field named, and checked twice: against our
codec, and against the ``proxyprotocol`` package (another implementation,
used only here, as an oracle).
"""

from __future__ import annotations

import contextlib
import socket
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6
from proxyprotocol.v2 import ProxyProtocolV2

from wire import proxy_protocol
from wire.proxy_protocol import Command, Family, ProxyHeaderError

SIGNATURE = bytes.fromhex("0D0A0D0A000D0A515549540A")  # section 2.2, the 12-byte block

# The spec's own example connection (section 2.1: "PROXY TCP4 192.168.0.1
# 192.168.0.11 56324 443"), carried over UDP in the binary format.
UDP4_EXAMPLE = (
    SIGNATURE
    + bytes.fromhex("21")  # version 2 (high nibble), command PROXY (low nibble)
    + bytes.fromhex("12")  # AF_INET (high), DGRAM (low): "UDP over IPv4"
    + bytes.fromhex("000C")  # address length: 2*4 + 2*2 = 12
    + bytes.fromhex("C0A80001")  # source 192.168.0.1
    + bytes.fromhex("C0A8000B")  # destination 192.168.0.11
    + bytes.fromhex("DC04")  # source port 56324
    + bytes.fromhex("01BB")  # destination port 443
)

# The spec's IPv6 example addresses (section 2.1: 2001:db8:: and
# 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff, ports 42300 and 443 in its v1 text).
UDP6_EXAMPLE = (
    SIGNATURE
    + bytes.fromhex("21")
    + bytes.fromhex("22")  # AF_INET6, DGRAM: "UDP over IPv6"
    + bytes.fromhex("0024")  # 2*16 + 2*2 = 36
    + bytes.fromhex("20010DB8000000000000000000000000")
    + bytes.fromhex("20010DB8FFFFFFFFFFFFFFFFFFFFFFFF")
    + bytes.fromhex("A53C")  # 42300
    + bytes.fromhex("01BB")
)

LOCAL = SIGNATURE + bytes.fromhex("20") + bytes.fromhex("00") + bytes.fromhex("0000")


def test_udp4_layout_encodes_and_parses() -> None:
    assert proxy_protocol.encode(("192.168.0.1", 56324), ("192.168.0.11", 443)) == UDP4_EXAMPLE
    header = proxy_protocol.parse(UDP4_EXAMPLE + b"payload")
    assert header.command is Command.PROXY and header.family is Family.UDP4
    assert header.source == ("192.168.0.1", 56324)
    assert header.destination == ("192.168.0.11", 443)
    assert header.length == 28 and header.tlvs == ()
    assert header.is_datagram


def test_udp6_layout_encodes_and_parses() -> None:
    encoded = proxy_protocol.encode(
        ("2001:db8::", 42300), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 443)
    )
    assert encoded == UDP6_EXAMPLE and len(encoded) == 52
    header = proxy_protocol.parse(UDP6_EXAMPLE)
    assert header.family is Family.UDP6
    assert header.source == ("2001:db8::", 42300)
    assert header.destination == ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 443)


def test_the_vectors_read_the_same_in_another_implementation() -> None:
    oracle = ProxyProtocolV2()
    four = oracle.unpack(UDP4_EXAMPLE)
    assert four.protocol == socket.SOCK_DGRAM
    assert (str(four.source[0]), four.source[1]) == ("192.168.0.1", 56324)
    assert (str(four.dest[0]), four.dest[1]) == ("192.168.0.11", 443)
    six = oracle.unpack(UDP6_EXAMPLE)
    assert (str(six.source[0]), six.source[1]) == ("2001:db8::", 42300)
    # And what the oracle builds is what we build.
    built = oracle.pack(
        ProxyResultIPv4(
            (IPv4Address("192.168.0.1"), 56324),
            (IPv4Address("192.168.0.11"), 443),
            protocol=socket.SOCK_DGRAM,
        )
    )
    assert built == UDP4_EXAMPLE


def test_local_command_is_accepted_without_addresses() -> None:
    # Section 2.2: a LOCAL header's family is ignored, but its length still skipped.
    assert proxy_protocol.encode_local() == LOCAL
    header = proxy_protocol.parse(LOCAL + b"x")
    assert header.command is Command.LOCAL and header.source is None and header.length == 16
    with_block = SIGNATURE + bytes.fromhex("20") + bytes.fromhex("12") + bytes.fromhex("000C")
    header = proxy_protocol.parse(with_block + bytes(12))
    assert header.command is Command.LOCAL and header.source is None and header.length == 28
    with pytest.raises(ProxyHeaderError) as raised:
        proxy_protocol.proxied_source(LOCAL)
    assert raised.value.reason == "not_proxied"


def test_tlvs_are_framed_and_bounded() -> None:
    # Section 2.2: TLVs follow the address block up to the header's declared length.
    tlvs = ((0x04, b""), (0xE0, b"rtclab"))  # PP2_TYPE_NOOP, a custom-range type
    encoded = proxy_protocol.encode(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs)
    assert encoded[14:16] == (12 + 3 + 3 + 6).to_bytes(2, "big")
    header = proxy_protocol.parse(encoded + b"rest")
    assert header.tlvs == tlvs and header.length == len(encoded)
    assert proxy_protocol.proxied_source(encoded + b"rest") == (("10.0.0.1", 1), len(encoded))
    # A TLV whose length runs past the header's end is refused.
    broken = bytearray(encoded)
    broken[-7:-6] = b"\x09"  # the custom TLV's length, low byte: 6 -> 9
    with pytest.raises(ProxyHeaderError, match="runs past"):
        proxy_protocol.parse(bytes(broken))


def test_tcp_and_unix_families_parse_but_name_no_udp_client() -> None:
    tcp4 = UDP4_EXAMPLE[:13] + b"\x11" + UDP4_EXAMPLE[14:]
    assert proxy_protocol.parse(tcp4).family is Family.TCP4
    unix = SIGNATURE + b"\x21\x32" + (216).to_bytes(2, "big") + bytes(216)
    header = proxy_protocol.parse(unix)
    assert header.family is Family.UNIX_DGRAM and header.source is None
    for data in (tcp4, unix):
        with pytest.raises(ProxyHeaderError) as raised:
            proxy_protocol.proxied_source(data)
        assert raised.value.reason == "not_proxied"


def test_proxied_source_fast_path_agrees_with_parse() -> None:
    data = UDP4_EXAMPLE + b"\x80\x00rtp"
    assert proxy_protocol.proxied_source(data) == (("192.168.0.1", 56324), 28)
    assert proxy_protocol.proxied_source(memoryview(bytearray(data))) == (
        ("192.168.0.1", 56324),
        28,
    )
    assert proxy_protocol.proxied_source(UDP6_EXAMPLE) == (("2001:db8::", 42300), 52)
    # IPv4-mapped IPv6 comes out canonical, as wire.addr.canonical has it.
    mapped = proxy_protocol.encode(("::ffff:10.1.2.3", 7), ("::ffff:10.1.2.4", 8))
    assert proxy_protocol.proxied_source(mapped) == (("10.1.2.3", 7), 52)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no_header"),
        (b"\x00\x01\x00\x00" + bytes(16), "no_header"),  # a STUN header
        (b"\x80\x00" + bytes(30), "no_header"),  # RTP
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "no_header"),  # version 1 is not accepted
        (SIGNATURE + b"\x21", "malformed"),  # signature, then cut short
        (UDP4_EXAMPLE[:12] + b"\x11" + UDP4_EXAMPLE[13:], "malformed"),  # version 1 nibble
        (UDP4_EXAMPLE[:12] + b"\x22" + UDP4_EXAMPLE[13:], "malformed"),  # command 2
        (UDP4_EXAMPLE[:13] + b"\x13" + UDP4_EXAMPLE[14:], "malformed"),  # transport 3
        (UDP4_EXAMPLE[:13] + b"\x42" + UDP4_EXAMPLE[14:], "malformed"),  # family 4
        (UDP4_EXAMPLE[:-1], "malformed"),  # address block truncated
        (UDP4_EXAMPLE[:14] + b"\x00\x08" + UDP4_EXAMPLE[16:24], "malformed"),  # 8 < 12
        (UDP6_EXAMPLE[:14] + b"\x00\x0c" + UDP6_EXAMPLE[16:28], "malformed"),  # 12 < 36
    ],
    ids=lambda v: v if isinstance(v, str) else v[:20].hex(),
)
def test_bad_input_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError) as raised:
        proxy_protocol.parse(data)
    assert raised.value.reason == reason
    with pytest.raises(ProxyHeaderError) as raised:
        proxy_protocol.proxied_source(data)
    assert raised.value.reason == reason


def test_encode_refuses_what_it_cannot_say() -> None:
    with pytest.raises(ValueError, match="family"):
        proxy_protocol.encode(("10.0.0.1", 1), ("::1", 2))
    with pytest.raises(ValueError, match="port"):
        proxy_protocol.encode(("10.0.0.1", 70000), ("10.0.0.2", 2))
    with pytest.raises(ValueError, match="literal"):
        proxy_protocol.encode(("localhost", 1), ("10.0.0.2", 2))


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None).map(str)
ports = st.integers(0, 0xFFFF)
tlv_lists = st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=40)), max_size=4).map(tuple)


@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports, tlv_lists, st.binary()
)
def test_round_trip_and_the_oracle_agree(
    hosts: tuple[str, str], sport: int, dport: int, tlvs: tuple[tuple[int, bytes], ...], tail: bytes
) -> None:
    encoded = proxy_protocol.encode((hosts[0], sport), (hosts[1], dport), tlvs)
    header = proxy_protocol.parse(encoded + tail)
    assert (header.source, header.destination) == ((hosts[0], sport), (hosts[1], dport))
    assert header.tlvs == tlvs and header.length == len(encoded)
    assert proxy_protocol.proxied_source(encoded + tail) == ((hosts[0], sport), len(encoded))
    if not tlvs:
        kind = ProxyResultIPv4 if ":" not in hosts[0] else ProxyResultIPv6
        address = IPv4Address if kind is ProxyResultIPv4 else IPv6Address
        oracle = ProxyProtocolV2().pack(
            kind(
                (address(hosts[0]), sport),  # type: ignore[arg-type]
                (address(hosts[1]), dport),  # type: ignore[arg-type]
                protocol=socket.SOCK_DGRAM,
            )
        )
        assert oracle == encoded


@given(st.binary(max_size=300))
def test_the_parser_only_returns_or_raises_its_own_error(data: bytes) -> None:
    for reader in (proxy_protocol.parse, proxy_protocol.proxied_source):
        with contextlib.suppress(ProxyHeaderError):
            reader(data)


@given(st.binary(max_size=120), st.integers(0, 51), st.integers(0, 255))
def test_mutated_headers_only_parse_or_raise_their_own_error(
    tail: bytes, index: int, value: int
) -> None:
    data = bytearray(UDP6_EXAMPLE + tail)
    data[index] = value
    for reader in (proxy_protocol.parse, proxy_protocol.proxied_source):
        with contextlib.suppress(ProxyHeaderError):
            reader(memoryview(data))
