"""First-byte demultiplexing of one UDP port (RFC 7983, RFC 5761).

WebRTC puts STUN, DTLS, RTP and RTCP on one 5-tuple; the first byte tells them
apart without parsing.  Classify first, then parse only what the decision needs
(the relay parses STUN alone), as str0m's ``MultiplexKind`` does.
"""

from __future__ import annotations

import enum
import struct


class PacketKind(enum.Enum):
    STUN = "stun"
    DTLS = "dtls"
    RTP = "rtp"
    RTCP = "rtcp"
    OTHER = "other"


# RFC 5761 section 4: RTCP packet types 192-223 (SR=200, RR=201, ...) sit in the
# second byte where an RTP packet has the marker bit and payload type.
_RTCP_TYPES = range(192, 224)


def classify(data: bytes) -> PacketKind:
    """The kind of one datagram, from its first (and for RTCP second) byte."""
    if not data:
        return PacketKind.OTHER
    first = data[0]
    if first <= 3:
        return PacketKind.STUN
    if 20 <= first <= 63:
        return PacketKind.DTLS
    if 128 <= first <= 191:
        if len(data) >= 2 and data[1] in _RTCP_TYPES:
            return PacketKind.RTCP
        return PacketKind.RTP
    # 16-19 (ZRTP), 64-79 (TURN channels) and the rest are not WebRTC media here.
    return PacketKind.OTHER


def rtp_ssrc(data: bytes) -> int | None:
    """The SSRC of an RTP packet (bytes 8-11), or None if too short.

    SRTP leaves the header in clear, so a relay can read it without keys.
    """
    if len(data) < 12:
        return None
    (ssrc,) = struct.unpack_from("!I", data, 8)
    return int(ssrc)
