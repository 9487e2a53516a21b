"""Call records: which media server holds (or is being asked to hold) which call.

A record exists from the moment an offer is accepted for placing, before it is
forwarded: signaling chooses the media server's session id for each attempt
(``X-Rtclab-Session-Id``), so the caller can DELETE a call whose forward is
still on its way or timed out, and signaling can delete a session it gave up
waiting for, instead of leaving it until the media server's setup timeout.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL

# Call ids a caller may choose (PUT /v1/calls/{id}): URL-safe, long enough to be
# unguessable when random.  Ours are "call_" + 24 hex digits.
CALL_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_call_id() -> str:
    # 96 random bits: unguessable, so a call id is enough to hang up a call.
    return "call_" + secrets.token_hex(12)


def new_session_id() -> str:
    """The media server's id for one placement attempt (its own ids look the same)."""
    return secrets.token_hex(8)


class CallState(enum.Enum):
    PLACING = "placing"  # forwarded (or about to be) to ``media_url``; no answer yet
    PLACED = "placed"  # the media server answered: the caller has the answer
    FAILED = "failed"  # every attempt failed; the sessions asked for were deleted


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    backend_id: int | None  # as the media server reports itself (route tokens carry it too)
    media_url: str  # the media server's internal API base URL (the latest attempt's)
    session_path: str  # its session's path, e.g. /sessions/abc (chosen by signaling)
    created_unix_s: float
    state: CallState = CallState.PLACED

    @property
    def session_url(self) -> str:
        return str(URL(self.media_url).join(URL(self.session_path)))

    def to_json(self) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created_unix_s, tz=UTC)
        return {
            "call_id": self.call_id,
            "state": self.state.value,
            "backend": self.backend_id,
            "media_url": self.media_url,
            "session_path": self.session_path,
            "created": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


class CallTable:
    """Records by call id, bounded: past ``max_calls`` the oldest is forgotten.

    A media server ends sessions on its own (caller gone, setup timeout), so
    records cannot all wait for a DELETE; the bound keeps a long lab run flat.
    """

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self._calls: OrderedDict[str, CallRecord] = OrderedDict()

    def add(self, record: CallRecord) -> CallRecord | None:
        """Store ``record`` (or replace the one with its id); return the record
        forgotten to make room, if any."""
        self._calls[record.call_id] = record
        if len(self._calls) > self.max_calls:
            return self._calls.popitem(last=False)[1]
        return None

    def get(self, call_id: str) -> CallRecord | None:
        return self._calls.get(call_id)

    def remove(self, call_id: str) -> CallRecord | None:
        return self._calls.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._calls)
