"""The sessions one media server holds, and whether it takes new ones."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from webrtc_server.core.phases import CloseReason


class Closable(Protocol):
    @property
    def id(self) -> str: ...

    async def close(self, reason: CloseReason) -> None: ...


S = TypeVar("S", bound=Closable)


class SessionRegistry(Generic[S]):
    """Sessions by id.  A session removes itself when it closes, whatever closed it."""

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}
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

    def remove(self, session: S) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def get(self, session_id: str) -> S | None:
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._sessions.values()))

    async def close_all(self, reason: CloseReason) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(session.close(reason) for session in sessions))
