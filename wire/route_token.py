"""The route token: the server's ICE ufrag, carrying where the session lives.

A media server picks its ICE username fragment; the client echoes it in every
connectivity check (USERNAME = ``serverUfrag:clientUfrag``).  Making that ufrag
a signed token lets the relay route the first packet of a session with no
lookup and no shared state, the way QUIC-LB puts a server id in the connection
id.

Layout, 15 bytes, standard base64 without padding (20 chars; every base64
character is an ice-char, RFC 8839 ``ice-char = ALPHA / DIGIT / "+" / "/"``)::

    version:u8 | backend_id:u16 | port:u16 | nonce:u32 | mac:48 bits

``port`` is the UDP port the session listens on: its media server's one shared
socket (``--media-socket shared``, the published design) or the session's own
(``per-session``); the relay needs nothing else to reach it.  Its meaning did
not change the layout, so tokens minted before shared sockets decode as ever.

``mac`` is HMAC-SHA256(secret, domain || first 9 bytes) truncated to 48 bits:
enough that forging a token by guessing costs 2**47 tries on average, while the
ufrag stays short.  ``nonce`` gives each session >= 24 random bits, as RFC 8445
asks of a ufrag.  The ICE password is derived from the ufrag with the same
secret, so a relay holding the secret can check MESSAGE-INTEGRITY without
asking anyone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass

VERSION = 1
MAC_BYTES = 6
_FIELDS = struct.Struct("!BHHI")
TOKEN_BYTES = _FIELDS.size + MAC_BYTES
TOKEN_CHARS = TOKEN_BYTES * 4 // 3
_MAC_DOMAIN = b"rtclab/route-token/v1\x00"
_PASSWORD_DOMAIN = b"rtclab/ice-password/v1\x00"
PASSWORD_CHARS = 24  # RFC 8445: >= 128 bits of randomness, 22..256 ice-chars

ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{4,256}")

# Used only when nothing else is configured, so a lab on one machine works with
# no set-up.  Anything that can be reached from elsewhere must set its own.
DEV_SECRET = b"rtclab-insecure-development-secret"


class TokenError(ValueError):
    """The ufrag is not a route token this secret signed."""


@dataclass(frozen=True, slots=True)
class RouteToken:
    backend_id: int
    port: int
    nonce: int
    version: int = VERSION


def encode(secret: bytes, backend_id: int, port: int, nonce: int | None = None) -> str:
    """A fresh route token naming ``backend_id`` and the session's UDP ``port``."""
    if not 0 <= backend_id <= 0xFFFF:
        raise ValueError(f"backend id {backend_id} is not in 0..65535")
    if not 1 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is not in 1..65535")
    if nonce is None:
        nonce = int.from_bytes(os.urandom(4), "big")
    fields = _FIELDS.pack(VERSION, backend_id, port, nonce)
    return base64.b64encode(fields + _mac(secret, fields)).decode("ascii")


def decode(secret: bytes, ufrag: str) -> RouteToken:
    """Check and unpack a route token; raise :class:`TokenError` if it is not one."""
    if len(ufrag) != TOKEN_CHARS:
        raise TokenError(f"a route token has {TOKEN_CHARS} characters, not {len(ufrag)}")
    try:
        raw = base64.b64decode(ufrag, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("not base64") from exc
    fields, mac = raw[: _FIELDS.size], raw[_FIELDS.size :]
    version, backend_id, port, nonce = _FIELDS.unpack(fields)
    if version != VERSION:
        raise TokenError(f"unknown token version {version}")
    if not hmac.compare_digest(mac, _mac(secret, fields)):
        raise TokenError("bad signature")
    return RouteToken(backend_id=backend_id, port=port, nonce=nonce, version=version)


def ice_password(secret: bytes, ufrag: str) -> str:
    """The ICE password of the session whose server ufrag is ``ufrag``."""
    digest = hmac.new(secret, _PASSWORD_DOMAIN + ufrag.encode("ascii"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")[:PASSWORD_CHARS]


def server_ufrag(username: str) -> str:
    """The server (first) half of a connectivity check's USERNAME."""
    return username.partition(":")[0]


def _mac(secret: bytes, fields: bytes) -> bytes:
    return hmac.new(secret, _MAC_DOMAIN + fields, hashlib.sha256).digest()[:MAC_BYTES]


def secret_from_text(text: str | None) -> bytes:
    """The secret as configured (``--secret`` / ``RTCLAB_SECRET``), or the dev default."""
    return text.encode("utf-8") if text else DEV_SECRET
