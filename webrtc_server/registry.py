"""The sessions one media server holds, and whether it takes new ones."""

from __future__ import annotations

import asyncio
import re
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

from webrtc_server.core.phases import CloseReason


class Closable(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def pending(self) -> bool:
        """Answered (or being answered) but not yet connected: a setup in flight."""
        ...

    async def close(self, reason: CloseReason) -> None: ...


S = TypeVar("S", bound=Closable)


# Closed sessions stay readable for a while: a lab asks "when did the server give
# up on this call, and why?" after the fact.  Bounded, so a long run stays flat.
CLOSED_KEPT = 512
# Ids deleted before their session existed (signaling gave up on a slow
# POST /sessions and deleted the id it had chosen): a later POST with one of
# them is refused, so the session is never created.  Bounded like CLOSED_KEPT.
DELETED_KEPT = 4096

# Ids signaling may choose (X-Rtclab-Session-Id); ours are 16 hex digits.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


class IdTaken(Exception):
    """The chosen session id is in use, or was deleted before its session existed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "exists" | "deleted"


class SessionRegistry(Generic[S]):
    """Sessions by id.  A session removes itself when it closes, whatever closed it;
    its last report stays in :attr:`closed` (the newest :data:`CLOSED_KEPT`)."""

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}
        self.closed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.deleted_early: OrderedDict[str, None] = OrderedDict()
        self.draining = False
        # Every peer connection a session made, weakly: one alive here and not
        # closed, with no session in the registry, is a leak /metrics shows.
        self.peer_connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def new_id(self) -> str:
        while True:
            # 64 random bits: unguessable enough for a lab, short enough to read in logs.
            session_id = secrets.token_hex(8)
            if session_id not in self._sessions:
                return session_id

    def claim(self, session_id: str) -> str:
        """Take ``session_id`` (chosen by signaling) for a new session, or raise IdTaken."""
        if session_id in self._sessions or session_id in self.closed:
            raise IdTaken("exists")
        if session_id in self.deleted_early:
            raise IdTaken("deleted")
        return session_id

    def delete_unknown(self, session_id: str) -> None:
        """A DELETE for an id no session has (yet): refuse the id from now on."""
        if SESSION_ID.fullmatch(session_id) and session_id not in self.closed:
            self.deleted_early[session_id] = None
            while len(self.deleted_early) > DELETED_KEPT:
                self.deleted_early.popitem(last=False)

    @property
    def pending(self) -> int:
        """Sessions whose setup is in flight (see :attr:`Closable.pending`)."""
        return sum(1 for session in self._sessions.values() if session.pending)

    def open_peer_connections(self) -> int:
        return sum(1 for pc in list(self.peer_connections) if pc.connectionState != "closed")

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
