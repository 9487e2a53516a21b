"""The sessions one media server holds, and whether it takes new ones."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

from webrtc_server.core.phases import CloseReason


class Closable(Protocol):
    @property
    def id(self) -> str: ...

    async def close(self, reason: CloseReason) -> None: ...


S = TypeVar("S", bound=Closable)


# Closed sessions stay readable for a while: a lab asks "when did the server give
# up on this call, and why?" after the fact.  Bounded, so a long run stays flat.
CLOSED_KEPT = 512


class SessionRegistry(Generic[S]):
    """Sessions by id.  A session removes itself when it closes, whatever closed it;
    its last report stays in :attr:`closed` (the newest :data:`CLOSED_KEPT`)."""

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}
        self.closed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.draining = False

    def new_id(self) -> str:
        while True:
            # 64 random bits: unguessable enough for a lab, short enough to read in logs.
            session_id = secrets.token_hex(8)
            if session_id not in self._sessions:
                return session_id

    def add(self, session: S) -> None:
        assert session.id not in self._sessions, "session ids are unique"
        self._sessions[session.id] = session

    def remove(self, session: S, final_report: dict[str, Any] | None = None) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        if final_report is not None:
            self.closed[session.id] = final_report
            while len(self.closed) > CLOSED_KEPT:
                self.closed.popitem(last=False)

    def get(self, session_id: str) -> S | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._sessions.values()))

    async def close_all(self, reason: CloseReason) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(session.close(reason) for session in sessions))
