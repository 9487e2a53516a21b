"""STUN codec: RFC 5769 vectors, round trips, and hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import stun
from wire.stun import Attr, MessageClass, StunError

DATA = Path(__file__).parent.parent / "data" / "stun"
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def vector(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_rfc5769_sample_request() -> None:
    data = vector("rfc5769-2.1-request.bin")
    msg = stun.parse(data)
    assert msg.method == stun.Method.BINDING
    assert msg.message_class is MessageClass.REQUEST
    assert msg.transaction_id == RFC5769_TID
    assert msg.username == "evtj:h6vY"
    assert msg.get(Attr.SOFTWARE) == "STUN test client"
    assert msg.get(Attr.PRIORITY) == 0x6E0001FF
    assert msg.get(Attr.ICE_CONTROLLED) == 0x932FF9B151263B36
    assert stun.check_integrity(msg, data, RFC5769_PASSWORD)
    assert stun.check_fingerprint(msg, data)
    assert not stun.check_integrity(msg, data, b"wrong password")


def test_rfc5769_ipv4_response() -> None:
    data = vector("rfc5769-2.2-ipv4-response.bin")
    msg = stun.parse(data)
    assert msg.message_class is MessageClass.SUCCESS
    assert msg.get(Attr.SOFTWARE) == "test vector"
    assert msg.get(Attr.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert stun.check_integrity(msg, data, RFC5769_PASSWORD)
    assert stun.check_fingerprint(msg, data)


def test_rfc5769_ipv6_response() -> None:
    data = vector("rfc5769-2.3-ipv6-response.bin")
    msg = stun.parse(data)
    assert msg.get(Attr.XOR_MAPPED_ADDRESS) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert stun.check_integrity(msg, data, RFC5769_PASSWORD)
    assert stun.check_fingerprint(msg, data)


def test_rfc5769_long_term_request() -> None:
    data = vector("rfc5769-2.4-long-term-request.bin")
    msg = stun.parse(data)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.username == username
    assert msg.get(Attr.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(Attr.REALM) == "example.org"
    key = stun.long_term_key(username, "example.org", "TheMatrIX")
    assert stun.check_integrity(msg, data, key)
    assert not stun.check_fingerprint(msg, data)  # this vector has none


@pytest.mark.parametrize(
    "name",
    [
        "rfc5769-2.1-request.bin",
        "rfc5769-2.2-ipv4-response.bin",
        "rfc5769-2.3-ipv6-response.bin",
    ],
)
def test_rebuilding_a_vector_reproduces_its_bytes(name: str) -> None:
    """Our encoder, given the vector's attributes, writes the vector's bytes
    (with the RFC's space padding): integrity and CRC are computed, not copied."""
    data = vector(name)
    msg = stun.parse(data)
    attributes = [
        (kind, value)
        for kind, value in msg.attributes
        if kind not in (Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT)
    ]
    rebuilt = stun.build(
        msg.method,
        msg.message_class,
        msg.transaction_id,
        attributes,
        integrity_key=RFC5769_PASSWORD,
        fingerprint=True,
        padding=b" ",
    )
    assert rebuilt == data


def test_binding_request_round_trip_with_unknown_attribute() -> None:
    tid = bytes(range(12))
    data = stun.build(
        stun.Method.BINDING,
        MessageClass.REQUEST,
        tid,
        [(Attr.USERNAME, "srv:cli"), (0xC057, b"\x00\x01\x00\x0a"), (Attr.USE_CANDIDATE, None)],
        integrity_key=b"pw",
        fingerprint=True,
    )
    msg = stun.parse(data)
    assert msg.username == "srv:cli"
    assert msg.get(0xC057) == b"\x00\x01\x00\x0a"
    assert msg.get(Attr.USE_CANDIDATE) is None and (Attr.USE_CANDIDATE, None) in msg.attributes
    assert stun.check_integrity(msg, data, b"pw")
    assert stun.check_fingerprint(msg, data)


def test_binding_helpers_interoperate_with_each_other() -> None:
    tid = b"\x01" * 12
    request = stun.parse(stun.binding_request(tid, "A:B", "pass", use_candidate=True))
    assert request.is_request and request.username == "A:B"
    response_bytes = stun.binding_success(tid, ("127.0.0.1", 4000), "pass")
    response = stun.parse(response_bytes)
    assert response.is_success and response.transaction_id == tid
    assert response.get(Attr.XOR_MAPPED_ADDRESS) == ("127.0.0.1", 4000)
    assert stun.check_integrity(response, response_bytes, b"pass")


def test_attributes_after_integrity_are_ignored_except_fingerprint() -> None:
    tid = b"\x02" * 12
    data = stun.build(
        stun.Method.BINDING,
        MessageClass.REQUEST,
        tid,
        [(Attr.USERNAME, "a:b")],
        integrity_key=b"k",
    )
    # Append a SOFTWARE attribute after MESSAGE-INTEGRITY (fixing the length).
    extra = b"\x80\x22\x00\x04abcd"
    tampered = bytearray(data + extra)
    tampered[2:4] = (len(tampered) - 20).to_bytes(2, "big")
    msg = stun.parse(bytes(tampered))
    assert msg.get(Attr.SOFTWARE) is None


BAD_MESSAGES = {
    "empty": b"",
    "short header": b"\x00\x01\x00\x00\x21\x12\xa4",
    "top bits set": b"\xc0\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12,
    "bad cookie": b"\x00\x01\x00\x00\xde\xad\xbe\xef" + b"\x00" * 12,
    "length not aligned": b"\x00\x01\x00\x03\x21\x12\xa4\x42" + b"\x00" * 12 + b"abc",
    "length past datagram": b"\x00\x01\x00\x08\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06",
    "attribute past end": b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06\x00\x10",
    "short priority": b"\x00\x01\x00\x08\x21\x12\xa4\x42"
    + b"\x00" * 12
    + b"\x00\x24\x00\x02\x00\x01\x00\x00",
    "username not utf-8": b"\x00\x01\x00\x08\x21\x12\xa4\x42"
    + b"\x00" * 12
    + b"\x00\x06\x00\x02\xff\xfe\x00\x00",
    "bad address family": b"\x01\x01\x00\x0c\x21\x12\xa4\x42"
    + b"\x00" * 12
    + b"\x00\x20\x00\x08\x00\x07\x00\x01\x01\x02\x03\x04",
    "attribute after fingerprint": b"\x00\x01\x00\x10\x21\x12\xa4\x42"
    + b"\x00" * 12
    + b"\x80\x28\x00\x04\x00\x00\x00\x00\x80\x22\x00\x04abcd",
}


@pytest.mark.parametrize("name", sorted(BAD_MESSAGES))
def test_malformed_messages_raise_stun_error(name: str) -> None:
    with pytest.raises(StunError):
        stun.parse(BAD_MESSAGES[name])


@pytest.mark.parametrize("cut", range(1, 108, 7))
def test_every_truncation_of_a_vector_is_rejected(cut: int) -> None:
    with pytest.raises(StunError):
        stun.parse(vector("rfc5769-2.1-request.bin")[:cut])


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=256))
def test_parser_only_returns_or_raises_its_own_error(data: bytes) -> None:
    try:
        msg = stun.parse(data)
    except StunError:
        return
    # Whatever parses is a whole, aligned message with the cookie in place.
    assert len(data) % 4 == 0 and data[4:8] == b"\x21\x12\xa4\x42"
    assert msg.transaction_id == data[8:20]


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=20, max_value=99), st.integers(min_value=0, max_value=255))
def test_a_changed_byte_under_the_hmac_never_passes_integrity(position: int, byte: int) -> None:
    """Bytes 20..99 are attributes, their padding and MESSAGE-INTEGRITY itself:
    all covered by the HMAC.  A mutation there either fails to parse or fails
    the integrity check; it never escapes as another exception."""
    original = vector("rfc5769-2.1-request.bin")
    data = bytearray(original)
    data[position] = byte
    if bytes(data) == original:
        return
    try:
        msg = stun.parse(bytes(data))
    except StunError:
        return
    assert not stun.check_integrity(msg, bytes(data), RFC5769_PASSWORD)


def test_request_transaction_id_reads_requests_only_from_the_header() -> None:
    tid = b"0123456789ab"
    request = stun.binding_request(tid, "a:b", "pw")
    success = stun.binding_success(tid, ("192.0.2.1", 1), "pw")
    indication = stun.build(stun.Method.BINDING, stun.MessageClass.INDICATION, tid)
    assert stun.request_transaction_id(request) == tid
    assert stun.request_transaction_id(memoryview(request)) == tid
    assert stun.request_transaction_id(success) is None
    assert stun.request_transaction_id(indication) is None
    assert stun.request_transaction_id(request[:19]) is None
    bad_cookie = request[:4] + b"\x00\x00\x00\x00" + request[8:]
    assert stun.request_transaction_id(bad_cookie) is None
    assert stun.request_transaction_id(b"\xc0" + request[1:]) is None


@given(st.binary(min_size=20, max_size=120))
def test_request_transaction_id_never_names_what_parse_calls_another_class(data: bytes) -> None:
    tid = stun.request_transaction_id(data)
    try:
        message = stun.parse(data)
    except StunError:
        return
    assert (tid is not None) == message.is_request
    if tid is not None:
        assert tid == message.transaction_id
