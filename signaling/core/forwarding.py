"""What a media server's answer to ``POST /sessions`` means for the call."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    CREATED = "created"  # the backend took the session: answer the caller
    REJECTED_OFFER = "rejected_offer"  # the backend refuses this SDP: tell the caller as is
    TRY_NEXT = "try_next"  # this backend cannot take it now: try another


class FailureReason(enum.StrEnum):
    UNREACHABLE = "unreachable"  # connection refused, reset, DNS
    TIMEOUT = "timeout"
    DRAINING = "draining"  # 503: the backend is shedding load on purpose
    BACKEND_ERROR = "backend_error"  # other 5xx
    BAD_RESPONSE = "bad_response"  # a status or body the internal API never sends


@dataclass(frozen=True, slots=True)
class ForwardOutcome:
    verdict: Verdict
    reason: FailureReason | None = None


# 4xx that are about the offer itself (the internal API answers these for bad
# SDP); another backend would refuse it the same way, so they are not retried.
OFFER_REJECTIONS = frozenset({400, 413, 415, 422})


def classify(status: int, *, has_location: bool) -> ForwardOutcome:
    if status == 201:
        if not has_location:
            return ForwardOutcome(Verdict.TRY_NEXT, FailureReason.BAD_RESPONSE)
        return ForwardOutcome(Verdict.CREATED)
    if status in OFFER_REJECTIONS:
        return ForwardOutcome(Verdict.REJECTED_OFFER)
    if status == 503:
        return ForwardOutcome(Verdict.TRY_NEXT, FailureReason.DRAINING)
    if status >= 500:
        return ForwardOutcome(Verdict.TRY_NEXT, FailureReason.BACKEND_ERROR)
    # 404, 405, 2xx other than 201...: a misconfigured URL or another service.
    return ForwardOutcome(Verdict.TRY_NEXT, FailureReason.BAD_RESPONSE)
