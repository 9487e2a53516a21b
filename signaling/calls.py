"""Call records: which media server holds which call."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL


def new_call_id() -> str:
    # 96 random bits: unguessable, so a call id is enough to hang up a call.
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    backend_id: int  # as the media server reports itself (route tokens carry it too)
    media_url: str  # the media server's internal API base URL
    session_path: str  # its Location for the session, e.g. /sessions/abc
    created_unix_s: float

    @property
    def session_url(self) -> str:
        return str(URL(self.media_url).join(URL(self.session_path)))

    def to_json(self) -> dict[str, Any]:
        created = datetime.fromtimestamp(self.created_unix_s, tz=UTC)
        return {
            "call_id": self.call_id,
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
        """Store ``record``; return the record forgotten to make room, if any."""
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
