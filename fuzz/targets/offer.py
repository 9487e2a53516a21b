"""signaling.core.offer: what the public API does with a POSTed body and its headers."""

from __future__ import annotations

from fuzz.target import SDP_DIRS, Target
from signaling.core import offer
from wire.service import ApiError


def one_input(data: bytes) -> None:
    # The first line stands for the Content-Type header, the rest for the body.
    header, _, body = data.partition(b"\n")
    try:
        offer.check_headers(header.decode("latin-1"), len(body))
    except ApiError as exc:
        assert exc.status in (413, 415), exc.status
    try:
        offer.parse_offer(body)
    except ApiError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.code)
        raise


def generated() -> list[bytes]:
    return [b"application/sdp\n" + path.read_bytes() for path in TARGET.seed_files()]


TARGET = Target(
    name="offer",
    about="signaling's offer checks: content type, size, UTF-8, SDP validation -> 4xx",
    one_input=one_input,
    expected=(ApiError,),
    seed_dirs=SDP_DIRS,
    generated=generated,
    instrument=("wire", "signaling.core"),
)
