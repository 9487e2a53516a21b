"""The PROXY protocol version 2 header (HAProxy's proxy-protocol.txt, section 2.2), sans-IO.

Under ``--forward encap`` the relay puts this header in front of every client
datagram it passes to a media server, naming the client's address, and the
media server puts the same header in front of every reply, so the relay
knows where to send it without looking anything up.  Layout, network byte
order::

    signature:12 = 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
    version:4 = 2 | command:4 (0 LOCAL, 1 PROXY)
    family:4 (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport:4 (0 UNSPEC, 1 STREAM, 2 DGRAM)
    length:u16 = bytes after these 16
    addresses: source ip, destination ip, source port, destination port
               (12 bytes for INET, 36 for INET6, 216 for UNIX)
    TLVs: type:u8 | length:u16 | value, to the end of ``length``

Why PROXY v2 and not Cloudflare's Simple Proxy Protocol (SPP): both carry a
client address per datagram and neither invents anything, but PROXY v2 is the
one with a published specification that defines UDP (its DGRAM transport,
families ``0x12`` and ``0x22``), that many independent implementations read
(HAProxy, dnsdist, Envoy, nginx, Squid, Varnish), that is shorter for IPv4
(28 bytes against SPP's fixed 38) and that can be extended (TLVs) without a
new format.  SPP is documented by one vendor for one service.  The reply
direction is ours to fix either way: rtclab's media server answers with the
header it received (source = the client, destination = the relay's public
address), i.e. the header names the same connection both ways.

The spec's security advice is followed where the header is read: accept it
only from configured sources, never guess whether it is present.  The parser
checks the signature, the version, the command, the family and transport,
the declared length against the datagram, the address block's size for its
family and the bounds of every TLV, and raises nothing but
:class:`ProxyHeaderError`.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from wire.addr import Address

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
VERSION = 2
HEADER_LENGTH = 16  # signature, version/command, family/transport, length

_FIXED = struct.Struct("!12sBBH")
_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_TLV = struct.Struct("!BH")
_UNIX_BLOCK = 216


class ProxyHeaderError(ValueError):
    """The datagram does not start with the PROXY v2 header the caller needs.

    ``reason`` says which way, so receivers can count them apart:
    ``no_header`` (no signature at all), ``malformed`` (a header that breaks
    the spec) or ``not_proxied`` (a valid header that names no UDP client:
    a LOCAL command, or another family; only :func:`proxied_source` raises it).
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class Command(enum.IntEnum):
    LOCAL = 0x0  # sent by the proxy on its own behalf (health checks): no addresses
    PROXY = 0x1  # relayed on behalf of the client the addresses name


class Family(enum.IntEnum):
    """The family/transport byte: address family in the high nibble, transport in the low."""

    UNSPEC = 0x00
    TCP4 = 0x11
    UDP4 = 0x12
    TCP6 = 0x21
    UDP6 = 0x22
    UNIX_STREAM = 0x31
    UNIX_DGRAM = 0x32


# Address block size by family nibble (UNSPEC carries none).
_BLOCK_BY_FAMILY = {0x0: 0, 0x1: _INET.size, 0x2: _INET6.size, 0x3: _UNIX_BLOCK}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed header; the payload starts at ``length``."""

    command: Command
    family: Family
    # The original connection's endpoints, for INET/INET6 with the PROXY
    # command; None otherwise (LOCAL, UNSPEC, UNIX), as the spec says to
    # ignore the address block then.
    source: Address | None
    destination: Address | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def is_datagram(self) -> bool:
        return self.family in (Family.UDP4, Family.UDP6)


# --- building ------------------------------------------------------------------


def encode(
    source: Address, destination: Address, tlvs: tuple[tuple[int, bytes], ...] = ()
) -> bytes:
    """A PROXY-command header for a UDP datagram from ``source`` to ``destination``.

    Both addresses must be of one family (IPv4 or IPv6 literals); the family
    byte is ``0x12`` or ``0x22`` accordingly.  Raises ValueError otherwise.
    """
    src_ip, dst_ip = _ip(source[0]), _ip(destination[0])
    if src_ip.version != dst_ip.version:
        raise ValueError(f"{source[0]} and {destination[0]} are not of one address family")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is not in 0..65535")
    block_format, family = (_INET, Family.UDP4) if src_ip.version == 4 else (_INET6, Family.UDP6)
    block = block_format.pack(src_ip.packed, dst_ip.packed, source[1], destination[1])
    extra = b"".join(_encode_tlv(kind, value) for kind, value in tlvs)
    length = len(block) + len(extra)
    if length > 0xFFFF:
        raise ValueError("TLVs too long for the header's 16-bit length")
    fixed = _FIXED.pack(SIGNATURE, VERSION << 4 | Command.PROXY, family, length)
    return fixed + block + extra


def encode_local() -> bytes:
    """A LOCAL-command header with no addresses (what a proxy sends on its own behalf)."""
    return _FIXED.pack(SIGNATURE, VERSION << 4 | Command.LOCAL, Family.UNSPEC, 0)


def _encode_tlv(kind: int, value: bytes) -> bytes:
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"TLV type {kind} is not a byte")
    if len(value) > 0xFFFF:
        raise ValueError("TLV value longer than 65535 bytes")
    return _TLV.pack(kind, len(value)) + bytes(value)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an IP address literal") from exc


# --- parsing -------------------------------------------------------------------


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader:
    """The header at the start of ``data``; :class:`ProxyHeaderError` if there is none."""
    if len(data) < HEADER_LENGTH:
        if len(data) >= len(SIGNATURE) and bytes(data[: len(SIGNATURE)]) == SIGNATURE:
            raise ProxyHeaderError(f"{len(data)} bytes: shorter than the 16-byte header")
        raise ProxyHeaderError("shorter than a PROXY v2 header", reason="no_header")
    signature, version_command, family_byte, length = _FIXED.unpack_from(data)
    if signature != SIGNATURE:
        raise ProxyHeaderError("no PROXY v2 signature", reason="no_header")
    if version_command >> 4 != VERSION:
        raise ProxyHeaderError(f"version {version_command >> 4}, not {VERSION}")
    try:
        command = Command(version_command & 0x0F)
    except ValueError:
        raise ProxyHeaderError(f"unassigned command {version_command & 0x0F:#x}") from None
    try:
        family = Family(family_byte)
    except ValueError:
        raise ProxyHeaderError(f"unspecified family/transport {family_byte:#04x}") from None
    end = HEADER_LENGTH + length
    if end > len(data):
        raise ProxyHeaderError(f"declares {length} more bytes; the datagram has {len(data) - 16}")
    if command is Command.LOCAL:
        # The spec: ignore the family and any address block; still skip `length`.
        return ProxyHeader(command, family, None, None, end)
    block = _BLOCK_BY_FAMILY[family_byte >> 4]
    if length < block:
        raise ProxyHeaderError(f"{length} bytes cannot hold a {family.name} address block")
    source: Address | None = None
    destination: Address | None = None
    if block == _INET.size:
        src_ip, dst_ip, src_port, dst_port = _INET.unpack_from(data, HEADER_LENGTH)
        source = (_ipv4_text(src_ip), src_port)
        destination = (_ipv4_text(dst_ip), dst_port)
    elif block == _INET6.size:
        src_ip, dst_ip, src_port, dst_port = _INET6.unpack_from(data, HEADER_LENGTH)
        source = (_ipv6_text(src_ip), src_port)
        destination = (_ipv6_text(dst_ip), dst_port)
    tlvs = _parse_tlvs(data, HEADER_LENGTH + block, end) if end > HEADER_LENGTH + block else ()
    return ProxyHeader(command, family, source, destination, end, tlvs)


# The header rtclab's relay and media servers send for IPv4 clients, up to the
# address block: PROXY command, UDP over IPv4, 12 address bytes, no TLVs.
_UDP4_PREFIX = _FIXED.pack(SIGNATURE, VERSION << 4 | Command.PROXY, Family.UDP4, _INET.size)
_UDP4_LENGTH = HEADER_LENGTH + _INET.size
_UDP4_SOURCE = struct.Struct("!4B4xH")  # source ip bytes, (destination ip), source port


def proxied_source(data: bytes | bytearray | memoryview) -> tuple[Address, int]:
    """``(client address, payload offset)`` of a datagram relayed with a PROXY header.

    The forwarders' per-datagram question.  The common header (UDP over
    IPv4, no TLVs) is read without building a :class:`ProxyHeader` (a
    quarter of the cost); anything else goes through :func:`parse`.  Raises
    :class:`ProxyHeaderError`, with reason ``not_proxied`` for a valid header
    that names no UDP client.
    """
    if data[:HEADER_LENGTH] == _UDP4_PREFIX and len(data) >= _UDP4_LENGTH:
        a, b, c, d, port = _UDP4_SOURCE.unpack_from(data, HEADER_LENGTH)
        return (f"{a}.{b}.{c}.{d}", port), _UDP4_LENGTH
    header = parse(data)
    if header.command is not Command.PROXY or not header.is_datagram or header.source is None:
        raise ProxyHeaderError(
            f"a {header.command.name} {header.family.name} header names no UDP client",
            "not_proxied",
        )
    return header.source, header.length


def _parse_tlvs(
    data: bytes | bytearray | memoryview, start: int, end: int
) -> tuple[tuple[int, bytes], ...]:
    found = []
    offset = start
    while offset < end:
        if offset + _TLV.size > end:
            raise ProxyHeaderError(f"a TLV header at byte {offset} runs past the header's end")
        kind, size = _TLV.unpack_from(data, offset)
        offset += _TLV.size
        if offset + size > end:
            raise ProxyHeaderError(f"TLV {kind:#04x} of {size} bytes runs past the header's end")
        found.append((kind, bytes(data[offset : offset + size])))
        offset += size
    return tuple(found)


def _ipv4_text(packed: bytes) -> str:
    return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"


def _ipv6_text(packed: bytes) -> str:
    ip = ipaddress.IPv6Address(packed)
    # The same canonical form as wire.addr.canonical: one client, one key.
    mapped = ip.ipv4_mapped
    return str(mapped) if mapped is not None else str(ip)
