"""What the media server does to an offer before aiortc sees it, and to its answer after.

Each step is a :mod:`wire.sdp` edit; this module fixes their order and their
reasons in one place (DESIGN.md, call path step 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from wire import sdp
from wire.addr import Address


@dataclass(frozen=True, slots=True)
class PreparedOffer:
    """An offer checked and stripped of candidates, ready for setRemoteDescription."""

    sdp: str
    setup: str | None  # the offer's DTLS role (actpass, active, passive)
    kinds: tuple[str, ...]


def prepare_offer(text: str) -> PreparedOffer:
    """Validate (raise :class:`wire.sdp.SdpError`) and strip every candidate.

    Stripping ``a=candidate`` keeps the server from checking the client directly,
    which would bypass the relay; stripping ``a=end-of-candidates`` too keeps
    aioice waiting for the client's checks instead of failing at once with no pairs.
    """
    description = sdp.validate_offer(text)
    return PreparedOffer(
        sdp=sdp.strip_candidates(text),
        setup=sdp.offer_setup(text),
        kinds=description.kinds,
    )


def local_answer(created: str, offer_setup: str | None) -> str:
    """The answer to set as local description: aiortc's, with our DTLS role.

    The role must be set here, before setLocalDescription, and not only in the
    text sent out: aiortc takes its own DTLS role from the local description, and
    answering ``passive`` while acting as DTLS client would deadlock the handshake.
    """
    return sdp.answer_setup(created, offer_setup)


def wire_answer(local: str, candidate: Address, offer_setup: str | None) -> str:
    """The answer the caller gets: one candidate, our DTLS role, sha-256 only."""
    host, port = candidate
    text = sdp.set_single_candidate(local, host, port)
    text = sdp.answer_setup(text, offer_setup)
    return sdp.only_sha256_fingerprints(text)
