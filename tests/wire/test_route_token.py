from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import route_token
from wire.route_token import ICE_CHARS, TokenError

SECRET = b"test-secret"


@given(
    st.integers(min_value=0, max_value=0xFFFF),
    st.integers(min_value=1, max_value=0xFFFF),
    st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_round_trip(backend_id: int, port: int, nonce: int) -> None:
    ufrag = route_token.encode(SECRET, backend_id, port, nonce)
    assert ICE_CHARS.fullmatch(ufrag)
    token = route_token.decode(SECRET, ufrag)
    assert (token.backend_id, token.port, token.nonce) == (backend_id, port, nonce)


def test_fresh_tokens_differ_for_the_same_session_fields() -> None:
    tokens = {route_token.encode(SECRET, 1, 40000) for _ in range(200)}
    assert len(tokens) == 200


def test_wrong_secret_is_rejected() -> None:
    ufrag = route_token.encode(SECRET, 1, 40000)
    with pytest.raises(TokenError, match="signature"):
        route_token.decode(b"other-secret", ufrag)


@given(st.integers(min_value=0, max_value=19), st.sampled_from("AQgw+/9z"))
def test_any_changed_character_is_rejected(position: int, char: str) -> None:
    ufrag = route_token.encode(SECRET, 7, 50000, 12345)
    forged = ufrag[:position] + char + ufrag[position + 1 :]
    if forged == ufrag:
        return
    with pytest.raises(TokenError):
        route_token.decode(SECRET, forged)


@pytest.mark.parametrize(
    "ufrag",
    ["", "abcd", "x" * 19, "x" * 21, "!" * 20, "A" * 20, "evtj", "a" * 256],
)
def test_garbage_is_rejected(ufrag: str) -> None:
    with pytest.raises(TokenError):
        route_token.decode(SECRET, ufrag)


def test_other_version_is_rejected() -> None:
    import base64

    raw = bytearray(base64.b64decode(route_token.encode(SECRET, 1, 2, 3)))
    raw[0] = 2
    with pytest.raises(TokenError, match="version"):
        route_token.decode(SECRET, base64.b64encode(bytes(raw)).decode())


def test_ice_password_is_deterministic_ice_chars_and_long_enough() -> None:
    ufrag = route_token.encode(SECRET, 1, 40000)
    password = route_token.ice_password(SECRET, ufrag)
    assert password == route_token.ice_password(SECRET, ufrag)
    assert ICE_CHARS.fullmatch(password) and len(password) >= 22
    assert password != route_token.ice_password(b"other", ufrag)


@pytest.mark.parametrize(("backend_id", "port"), [(-1, 1), (65536, 1), (1, 0), (1, 65536)])
def test_out_of_range_fields_are_refused(backend_id: int, port: int) -> None:
    with pytest.raises(ValueError):
        route_token.encode(SECRET, backend_id, port)


def test_server_ufrag_is_the_first_half_of_username() -> None:
    assert route_token.server_ufrag("SERVER:client") == "SERVER"
    assert route_token.server_ufrag("nocolon") == "nocolon"
