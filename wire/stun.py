"""STUN messages (RFC 8489), sans-IO: parse bytes, build bytes, check integrity.

The relay reads only the header and USERNAME of client requests, but a parser
that is lax about framing is an attack surface on a public port, so this one
checks everything it can cheaply: the two zero bits, the magic cookie, the
4-byte alignment, the declared length against the datagram, and the bounds of
every attribute.  It never raises anything but :class:`StunError`.

Attributes live in ONE table (:data:`ATTRIBUTES`): type -> name, decoder and
encoder.  Unknown attributes are kept as raw bytes and otherwise skipped, which
is what RFC 8489 asks of comprehension-optional attributes and what real
clients need (libwebrtc adds 0xC057, for instance).
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

HEADER_LENGTH = 20
MAGIC_COOKIE = 0x2112A442
FINGERPRINT_XOR = 0x5354554E  # "STUN", RFC 8489 section 14.7

_HEADER = struct.Struct("!HHI12s")
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_ATTR_HEADER = struct.Struct("!HH")


class StunError(ValueError):
    """The bytes are not a well-formed STUN message (or an attribute is bad)."""


class Method(enum.IntEnum):
    BINDING = 0x001


class MessageClass(enum.IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Attr(enum.IntEnum):
    """Attribute types this project names (RFC 8489, RFC 8445, RFC 5245)."""

    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A


# --- attribute codecs --------------------------------------------------------
#
# A decoder gets the attribute value and the transaction id (XOR addresses need
# it) and returns a Python value; an encoder does the reverse.  Decoders raise
# StunError (or struct.error / ValueError / UnicodeDecodeError, which parse()
# converts) on bad values.

Decoder = Callable[[bytes, bytes], Any]
Encoder = Callable[[Any, bytes], bytes]


def _dec_text(value: bytes, _tid: bytes) -> str:
    return value.decode("utf-8")


def _enc_text(value: str, _tid: bytes) -> bytes:
    return value.encode("utf-8")


def _dec_u32(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise StunError(f"expected 4 bytes, got {len(value)}")
    (number,) = struct.unpack("!I", value)
    return int(number)


def _enc_u32(value: int, _tid: bytes) -> bytes:
    return struct.pack("!I", value)


def _dec_u64(value: bytes, _tid: bytes) -> int:
    if len(value) != 8:
        raise StunError(f"expected 8 bytes, got {len(value)}")
    (number,) = struct.unpack("!Q", value)
    return int(number)


def _enc_u64(value: int, _tid: bytes) -> bytes:
    return struct.pack("!Q", value)


def _dec_empty(value: bytes, _tid: bytes) -> None:
    if value:
        raise StunError("expected an empty value")


def _enc_empty(_value: None, _tid: bytes) -> bytes:
    return b""


def _dec_raw(value: bytes, _tid: bytes) -> bytes:
    return value


def _enc_raw(value: bytes, _tid: bytes) -> bytes:
    return bytes(value)


def _fixed(size: int) -> Decoder:
    def decode(value: bytes, _tid: bytes) -> bytes:
        if len(value) != size:
            raise StunError(f"expected {size} bytes, got {len(value)}")
        return value

    return decode


def _address_xor(tid: bytes, family: int) -> bytes:
    cookie = struct.pack("!I", MAGIC_COOKIE)
    return cookie if family == 1 else cookie + tid


def _dec_address(value: bytes, tid: bytes, *, xor: bool) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("address attribute too short")
    _reserved, family, port = struct.unpack("!BBH", value[:4])
    raw = value[4:]
    if (family, len(raw)) not in ((1, 4), (2, 16)):
        raise StunError(f"bad address family {family} or length {len(raw)}")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = _address_xor(tid, family)
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    return str(ipaddress.ip_address(raw)), port


def _enc_address(value: tuple[str, int], tid: bytes, *, xor: bool) -> bytes:
    host, port = value
    ip = ipaddress.ip_address(host)
    family = 1 if ip.version == 4 else 2
    raw = ip.packed
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = _address_xor(tid, family)
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    return struct.pack("!BBH", 0, family, port) + raw


def _dec_error_code(value: bytes, _tid: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    klass, number = value[2] & 0x07, value[3]
    return klass * 100 + number, value[4:].decode("utf-8")


def _enc_error_code(value: tuple[int, str], _tid: bytes) -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def _dec_unknown_attributes(value: bytes, _tid: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunError("UNKNOWN-ATTRIBUTES has an odd length")
    return tuple(struct.unpack(f"!{len(value) // 2}H", value))


def _enc_unknown_attributes(value: Iterable[int], _tid: bytes) -> bytes:
    types = tuple(value)
    return struct.pack(f"!{len(types)}H", *types)


@dataclass(frozen=True, slots=True)
class AttrCodec:
    name: str
    decode: Decoder
    encode: Encoder


ATTRIBUTES: dict[int, AttrCodec] = {
    Attr.MAPPED_ADDRESS: AttrCodec(
        "MAPPED-ADDRESS",
        lambda v, t: _dec_address(v, t, xor=False),
        lambda v, t: _enc_address(v, t, xor=False),
    ),
    Attr.USERNAME: AttrCodec("USERNAME", _dec_text, _enc_text),
    Attr.MESSAGE_INTEGRITY: AttrCodec("MESSAGE-INTEGRITY", _fixed(20), _enc_raw),
    Attr.ERROR_CODE: AttrCodec("ERROR-CODE", _dec_error_code, _enc_error_code),
    Attr.UNKNOWN_ATTRIBUTES: AttrCodec(
        "UNKNOWN-ATTRIBUTES", _dec_unknown_attributes, _enc_unknown_attributes
    ),
    Attr.REALM: AttrCodec("REALM", _dec_text, _enc_text),
    Attr.NONCE: AttrCodec("NONCE", _dec_text, _enc_text),
    Attr.MESSAGE_INTEGRITY_SHA256: AttrCodec("MESSAGE-INTEGRITY-SHA256", _dec_raw, _enc_raw),
    Attr.USERHASH: AttrCodec("USERHASH", _fixed(32), _enc_raw),
    Attr.XOR_MAPPED_ADDRESS: AttrCodec(
        "XOR-MAPPED-ADDRESS",
        lambda v, t: _dec_address(v, t, xor=True),
        lambda v, t: _enc_address(v, t, xor=True),
    ),
    Attr.PRIORITY: AttrCodec("PRIORITY", _dec_u32, _enc_u32),
    Attr.USE_CANDIDATE: AttrCodec("USE-CANDIDATE", _dec_empty, _enc_empty),
    Attr.SOFTWARE: AttrCodec("SOFTWARE", _dec_text, _enc_text),
    Attr.FINGERPRINT: AttrCodec("FINGERPRINT", _dec_u32, _enc_u32),
    Attr.ICE_CONTROLLED: AttrCodec("ICE-CONTROLLED", _dec_u64, _enc_u64),
    Attr.ICE_CONTROLLING: AttrCodec("ICE-CONTROLLING", _dec_u64, _enc_u64),
}


# --- messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A parsed STUN message.

    ``attributes`` holds (type, value) in wire order; known types are decoded
    through :data:`ATTRIBUTES`, unknown ones are raw bytes.  The offsets of
    MESSAGE-INTEGRITY and FINGERPRINT (or -1) let the check helpers rebuild
    exactly the bytes the sender's HMAC and CRC covered.
    """

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[tuple[int, Any], ...]
    integrity_offset: int = -1
    fingerprint_offset: int = -1

    def get(self, attr_type: int) -> Any:
        """The first value of ``attr_type``, or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    @property
    def username(self) -> str | None:
        value = self.get(Attr.USERNAME)
        return value if isinstance(value, str) else None

    @property
    def is_request(self) -> bool:
        return self.message_class is MessageClass.REQUEST

    @property
    def is_success(self) -> bool:
        return self.message_class is MessageClass.SUCCESS


def message_type(method: int, message_class: MessageClass) -> int:
    """Interleave method and class bits into the 14-bit message type."""
    cls = int(message_class)
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def _split_type(msg_type: int) -> tuple[int, MessageClass]:
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    cls = ((msg_type & 0x0010) >> 4) | ((msg_type & 0x0100) >> 7)
    return method, MessageClass(cls)


def request_transaction_id(data: bytes | bytearray | memoryview) -> bytes | None:
    """The transaction id of a STUN request, read from the header alone; else None.

    For a relay's fast path, where a full :func:`parse` per datagram would cost
    more than forwarding it: checks only the length, the cookie and the class
    bits.  Anything it returns a value for, :func:`parse` may still refuse.
    """
    if len(data) < HEADER_LENGTH or data[0] & 0xC1 or data[1] & 0x10:
        return None  # too short, the two top bits set, or not a request (class bits)
    if bytes(data[4:8]) != _COOKIE_BYTES:
        return None
    return bytes(data[8:20])


def parse(data: bytes) -> StunMessage:
    """Parse one STUN message; raise :class:`StunError` on anything malformed."""
    try:
        return _parse(bytes(data))
    except StunError:
        raise
    except (struct.error, ValueError, UnicodeDecodeError, IndexError) as exc:
        # Decoders may fail in ways of their own; the contract is one error type.
        raise StunError(f"bad attribute value: {exc}") from exc


def _parse(data: bytes) -> StunMessage:
    if len(data) < HEADER_LENGTH:
        raise StunError(f"{len(data)} bytes is shorter than a STUN header")
    msg_type, length, cookie, tid = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunError("the two most significant bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError(f"bad magic cookie 0x{cookie:08x}")
    if length % 4:
        raise StunError(f"message length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunError(f"message length {length} disagrees with datagram size {len(data)}")
    method, cls = _split_type(msg_type)

    attributes: list[tuple[int, Any]] = []
    integrity_offset = fingerprint_offset = -1
    pos = HEADER_LENGTH
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise StunError("truncated attribute header")
        attr_type, attr_len = _ATTR_HEADER.unpack_from(data, pos)
        value_start = pos + 4
        value_end = value_start + attr_len
        if value_end > end:
            raise StunError(f"attribute 0x{attr_type:04x} runs past the end of the message")
        if fingerprint_offset >= 0:
            raise StunError("FINGERPRINT is not the last attribute")
        value = data[value_start:value_end]
        # RFC 8489 section 14.5: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256
        # and FINGERPRINT count; anything else is ignored.
        ignored = integrity_offset >= 0 and attr_type not in (
            Attr.FINGERPRINT,
            Attr.MESSAGE_INTEGRITY_SHA256,
        )
        if not ignored:
            codec = ATTRIBUTES.get(attr_type)
            decoded = codec.decode(value, tid) if codec else value
            attributes.append((attr_type, decoded))
            if attr_type == Attr.MESSAGE_INTEGRITY:
                integrity_offset = pos
            elif attr_type == Attr.FINGERPRINT:
                fingerprint_offset = pos
        pos = value_end + (-attr_len % 4)
    if pos != end:
        raise StunError("attribute padding runs past the end of the message")
    return StunMessage(
        method=method,
        message_class=cls,
        transaction_id=tid,
        attributes=tuple(attributes),
        integrity_offset=integrity_offset,
        fingerprint_offset=fingerprint_offset,
    )


# --- integrity and fingerprint -----------------------------------------------


def _with_length(data: bytes, upto: int, extra: int) -> bytes:
    """The message up to ``upto`` with its length field set as if it ended
    ``extra`` bytes after ``upto`` (the rule for both HMAC and CRC input)."""
    head = bytearray(data[:upto])
    struct.pack_into("!H", head, 2, upto - HEADER_LENGTH + extra)
    return bytes(head)


def fingerprint_of(data: bytes, upto: int) -> int:
    """The FINGERPRINT value for a message whose FINGERPRINT attribute starts at ``upto``."""
    return (binascii.crc32(_with_length(data, upto, 8)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def integrity_of(data: bytes, upto: int, key: bytes) -> bytes:
    """The MESSAGE-INTEGRITY value for a message whose MI attribute starts at ``upto``."""
    return hmac.new(key, _with_length(data, upto, 24), hashlib.sha1).digest()


def check_fingerprint(message: StunMessage, data: bytes) -> bool:
    """True if ``message`` (parsed from ``data``) carries a correct FINGERPRINT."""
    if message.fingerprint_offset < 0:
        return False
    return bool(message.get(Attr.FINGERPRINT) == fingerprint_of(data, message.fingerprint_offset))


def check_integrity(message: StunMessage, data: bytes, key: bytes) -> bool:
    """True if ``message`` carries a MESSAGE-INTEGRITY that ``key`` produced.

    For ICE (short-term credentials) the key is the password of the side that
    receives the request, as UTF-8 (RFC 8489 section 9.1.1, RFC 8445 7.2.2).
    """
    if message.integrity_offset < 0:
        return False
    expected = integrity_of(data, message.integrity_offset, key)
    received = message.get(Attr.MESSAGE_INTEGRITY)
    return isinstance(received, bytes) and hmac.compare_digest(expected, received)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The long-term credential key, MD5(username ":" realm ":" password).

    ``password`` must already be SASLprep-processed (OpaqueString profile).
    """
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


# --- building ----------------------------------------------------------------


def build(
    method: int,
    message_class: MessageClass,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, Any]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = False,
    padding: bytes = b"\x00",
) -> bytes:
    """Encode a STUN message.

    Known attribute types take Python values (see :data:`ATTRIBUTES`); unknown
    ones take bytes.  ``integrity_key`` appends MESSAGE-INTEGRITY, then
    ``fingerprint`` appends FINGERPRINT, both computed over the final bytes.
    ``padding`` is the pad byte (RFC 5769 uses spaces, which must be accepted).
    """
    if len(transaction_id) != 12:
        raise StunError("transaction id must be 12 bytes")
    body = bytearray()
    for attr_type, value in attributes:
        codec = ATTRIBUTES.get(attr_type)
        raw = codec.encode(value, transaction_id) if codec else bytes(value)
        body += _ATTR_HEADER.pack(attr_type, len(raw)) + raw + padding * (-len(raw) % 4)
    msg_type = message_type(method, message_class)
    data = _HEADER.pack(msg_type, len(body), MAGIC_COOKIE, transaction_id) + bytes(body)
    if integrity_key is not None:
        digest = integrity_of(data, len(data), integrity_key)
        data = (
            _with_length(data, len(data), 24)
            + _ATTR_HEADER.pack(Attr.MESSAGE_INTEGRITY, 20)
            + digest
        )
    if fingerprint:
        crc = fingerprint_of(data, len(data))
        data = (
            _with_length(data, len(data), 8)
            + _ATTR_HEADER.pack(Attr.FINGERPRINT, 4)
            + struct.pack("!I", crc)
        )
    return data


def binding_request(
    transaction_id: bytes,
    username: str,
    password: str,
    *,
    priority: int = 0x6E0001FF,
    tie_breaker: int = 0,
    controlling: bool = True,
    use_candidate: bool = False,
) -> bytes:
    """An ICE connectivity check as a full ICE agent sends it (RFC 8445 7.1.1).

    ``username`` is ``remoteUfrag:localUfrag`` and ``password`` the remote
    side's ICE password.  Used by tests and by the lab's raw STUN probe.
    """
    attributes: list[tuple[int, Any]] = [
        (Attr.USERNAME, username),
        (Attr.PRIORITY, priority),
        (Attr.ICE_CONTROLLING if controlling else Attr.ICE_CONTROLLED, tie_breaker),
    ]
    if use_candidate:
        attributes.append((Attr.USE_CANDIDATE, None))
    return build(
        Method.BINDING,
        MessageClass.REQUEST,
        transaction_id,
        attributes,
        integrity_key=password.encode("utf-8"),
        fingerprint=True,
    )


def binding_success(transaction_id: bytes, mapped: tuple[str, int], password: str) -> bytes:
    """A Binding success response as an ICE agent answers a check."""
    return build(
        Method.BINDING,
        MessageClass.SUCCESS,
        transaction_id,
        [(Attr.XOR_MAPPED_ADDRESS, mapped)],
        integrity_key=password.encode("utf-8"),
        fingerprint=True,
    )
