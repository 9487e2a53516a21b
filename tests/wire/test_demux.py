from __future__ import annotations

import pytest

from wire.demux import PacketKind, classify, rtp_ssrc


@pytest.mark.parametrize(
    ("first", "second", "kind"),
    [
        (0, 1, PacketKind.STUN),
        (1, 1, PacketKind.STUN),
        (3, 0, PacketKind.STUN),
        (4, 0, PacketKind.OTHER),
        (19, 0, PacketKind.OTHER),  # ZRTP
        (20, 0, PacketKind.DTLS),  # change_cipher_spec
        (22, 254, PacketKind.DTLS),  # handshake
        (23, 254, PacketKind.DTLS),  # application data (SCTP)
        (63, 0, PacketKind.DTLS),
        (64, 0, PacketKind.OTHER),  # TURN channel
        (127, 0, PacketKind.OTHER),
        (128, 111, PacketKind.RTP),  # Opus, no marker
        (144, 239, PacketKind.RTP),  # marker + PT 111, extension bit set
        (128, 200, PacketKind.RTCP),  # SR
        (129, 201, PacketKind.RTCP),  # RR with one report block
        (143, 206, PacketKind.RTCP),  # PSFB
        (128, 223, PacketKind.RTCP),
        (128, 224, PacketKind.RTP),
        (191, 111, PacketKind.RTP),
        (192, 0, PacketKind.OTHER),
        (255, 0, PacketKind.OTHER),
    ],
)
def test_classification_follows_rfc7983(first: int, second: int, kind: PacketKind) -> None:
    assert classify(bytes([first, second]) + b"\x00" * 10) is kind


def test_empty_and_one_byte_datagrams() -> None:
    assert classify(b"") is PacketKind.OTHER
    assert classify(b"\x80") is PacketKind.RTP


def test_rtp_ssrc_reads_bytes_8_to_11() -> None:
    packet = bytes([0x80, 111, 0, 1, 0, 0, 0, 160]) + (0xDEADBEEF).to_bytes(4, "big") + b"payload"
    assert rtp_ssrc(packet) == 0xDEADBEEF
    assert rtp_ssrc(packet[:11]) is None
