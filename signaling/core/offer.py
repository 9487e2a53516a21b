"""Is this request an offer we can place?  Checks in the order a client can fix them.

Content type first (nothing else matters if it is not SDP), then size, then
the SDP itself through :func:`wire.sdp.validate_offer`.  Each failure is an
:class:`ApiError` carrying the HTTP status the caller should see.
"""

from __future__ import annotations

from wire import sdp
from wire.service import ApiError

SDP_CONTENT_TYPE = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024

# wire.sdp error codes -> HTTP status: an offer that parses but asks for
# something we cannot serve is understood-but-unprocessable (422), anything
# else is a bad request (400).
_SDP_STATUS = {"no_audio": 422}


def media_type(content_type_header: str | None) -> str:
    """``application/sdp`` from ``Application/SDP; charset=utf-8``; "" if absent."""
    if not content_type_header:
        return ""
    return content_type_header.split(";", 1)[0].strip().lower()


def check_headers(
    content_type_header: str | None,
    content_length: int | None,
    max_bytes: int = MAX_OFFER_BYTES,
) -> None:
    """Reject by headers alone, before reading the body."""
    found = media_type(content_type_header)
    if found != SDP_CONTENT_TYPE:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the offer must be sent as {SDP_CONTENT_TYPE}, not {found or 'no content type'}",
            headers={"Accept-Post": SDP_CONTENT_TYPE},
        )
    if content_length is not None and content_length > max_bytes:
        raise too_large(max_bytes)


def too_large(max_bytes: int = MAX_OFFER_BYTES) -> ApiError:
    return ApiError(413, "offer_too_large", f"the offer is larger than {max_bytes} bytes")


def parse_offer(body: bytes, max_bytes: int = MAX_OFFER_BYTES) -> str:
    """The offer text if it is one we can answer; otherwise the ApiError saying why."""
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed", f"the offer is not UTF-8 text: {exc.reason}") from exc
    if not text.strip():
        raise ApiError(400, "empty_offer", "the request body is empty; send an SDP offer")
    try:
        sdp.validate_offer(text)
    except sdp.SdpError as exc:
        raise ApiError(_SDP_STATUS.get(exc.code, 400), exc.code, str(exc)) from exc
    return text
