"""Test-built datagrams: ICE checks carrying real route tokens, DTLS- and RTP-shaped payloads."""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass, field

from wire import route_token, stun

SECRET = b"stun-lb-test-secret"

_tids = itertools.count(1)


def new_tid() -> bytes:
    """A distinct 12-byte transaction id per call (readable in failure output)."""
    return b"tid-" + next(_tids).to_bytes(8, "big")


@dataclass
class Session:
    """One ICE session as a media server would announce it, and its client's checks."""

    backend_id: int = 1
    port: int = 50000
    client_ufrag: str = "cli1"
    secret: bytes = SECRET
    server_ufrag: str = field(init=False)
    password: str = field(init=False)

    def __post_init__(self) -> None:
        self.server_ufrag = route_token.encode(self.secret, self.backend_id, self.port)
        self.password = route_token.ice_password(self.secret, self.server_ufrag)

    @property
    def key(self) -> tuple[str, str]:
        return self.server_ufrag, self.client_ufrag

    def check(self, tid: bytes | None = None, password: str | None = None) -> bytes:
        """The client's connectivity check (Binding request, USERNAME server:client)."""
        return stun.binding_request(
            tid or new_tid(),
            f"{self.server_ufrag}:{self.client_ufrag}",
            password or self.password,
        )

    def success(self, tid: bytes, mapped: tuple[str, int] = ("192.0.2.1", 1)) -> bytes:
        """The server's answer to a check (signed with the server's own password)."""
        return stun.binding_success(tid, mapped, self.password)


def rtp(ssrc: int = 0x11223344, seq: int = 1, payload: bytes = b"\x00" * 160) -> bytes:
    """An RTP-shaped datagram (version 2, Opus payload type 111)."""
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + payload


def rtcp_rr(ssrc: int = 0x11223344) -> bytes:
    """An RTCP receiver report with no report blocks (RFC 3550 6.4.2)."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def dtls_record(content_type: int = 22, body: bytes = b"") -> bytes:
    """A DTLS 1.2 record header plus ``body`` (type 22: handshake)."""
    body = body or os.urandom(40)
    sequence = b"\x00" * 6
    return (
        struct.pack("!BHH", content_type, 0xFEFD, 0)
        + sequence
        + struct.pack("!H", len(body))
        + body
    )


def stun_binding_error(tid: bytes, password: str, code: int = 487) -> bytes:
    return stun.build(
        stun.Method.BINDING,
        stun.MessageClass.ERROR,
        tid,
        [(stun.Attr.ERROR_CODE, (code, "Role Conflict"))],
        integrity_key=password.encode(),
        fingerprint=True,
    )
