"""wire.route_token: decoding the server ufrag a connectivity check names."""

from __future__ import annotations

from collections.abc import Iterable

from fuzz.target import SEED_SECRET, Target
from wire import route_token


def one_input(data: bytes) -> None:
    # What the relay hands it: the first half of a UTF-8 USERNAME.
    ufrag = route_token.server_ufrag(data.decode("utf-8", errors="replace"))
    token = route_token.decode(SEED_SECRET, ufrag)
    # Whatever decodes is exactly what encode makes of its fields.
    assert route_token.encode(SEED_SECRET, token.backend_id, token.port, token.nonce) == ufrag
    assert len(route_token.ice_password(SEED_SECRET, ufrag)) == route_token.PASSWORD_CHARS


def generated() -> Iterable[bytes]:
    for backend_id, port in ((1, 50000), (2, 1), (65535, 65535), (0, 3478)):
        token = route_token.encode(SEED_SECRET, backend_id, port, nonce=backend_id * 7919)
        yield token.encode()
        yield f"{token}:h6vY".encode()


TARGET = Target(
    name="route_token",
    about="route-token decode (the server ufrag: version, backend, port, nonce, HMAC)",
    one_input=one_input,
    expected=(route_token.TokenError,),
    generated=generated,
)
