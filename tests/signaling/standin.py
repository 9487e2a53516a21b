"""TEST FIXTURE: a stand-in media server for signaling's tests.

A real aiohttp server on loopback that speaks the media servers' internal API
(``POST /sessions``, ``GET``/``DELETE /sessions/{id}``, ``GET /healthz``) and
nothing more: no WebRTC, no media.  Its answer is a fixed SDP text naming the
stand-in, so tests can tell which one answered.  Knobs make it fail, drain or
refuse offers the way a real media server would.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiohttp import web


class StandInMediaServer:
    def __init__(self, backend_id: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend_id = backend_id
        self.host = host
        self.port = port  # 0 until the first start; then kept, so a restart reuses it
        self.sessions: dict[str, str] = {}  # session id -> offer text
        self.offers_received = 0
        self.deleted: list[str] = []
        self.draining = False
        # When set, POST /sessions answers this status with a JSON error
        # (500: broken; 400/422: refuses the SDP).
        self.fail_posts_with: int | None = None
        # When set, POST /sessions takes this long before answering (a slow or
        # hung media server), having taken the session id it was asked for.
        self.post_delay_s = 0.0
        self.asked_ids: list[str] = []  # X-Rtclab-Session-Id of each POST
        self.post_arrived = asyncio.Event()
        self.deleted_unknown: list[str] = []  # DELETEs for ids it had no session for
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        assert self.port, "start() the stand-in first"
        return f"http://{self.host}:{self.port}"

    def answer_for(self, session_id: str) -> str:
        return (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=stand-in\r\nt=0 0\r\n"
            f"a=x-stand-in:{self.backend_id}/{session_id}\r\n"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/sessions", self._create)
        app.router.add_get("/sessions/{id}", self._get)
        app.router.add_delete("/sessions/{id}", self._delete)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the internal API ---------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": code}}, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        self.offers_received += 1
        if self.draining:
            return self._error(503, "draining")
        if self.fail_posts_with is not None:
            return self._error(self.fail_posts_with, "stand_in_failure")
        if request.content_type != "application/sdp":
            return self._error(415, "unsupported_media_type")
        asked = request.headers.get("X-Rtclab-Session-Id")
        if asked is not None:
            self.asked_ids.append(asked)
        self.post_arrived.set()
        if self.post_delay_s:
            await asyncio.sleep(self.post_delay_s)
        session_id = f"s{next(self._ids)}"
        self.sessions[session_id] = await request.text()
        return web.Response(
            status=201,
            text=self.answer_for(session_id),
            content_type="application/sdp",
            headers={"Location": f"/sessions/{session_id}"},
        )

    def _session_json(self, session_id: str) -> dict[str, Any]:
        return {"id": session_id, "backend_id": self.backend_id, "state": "new"}

    async def _get(self, request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        if session_id not in self.sessions:
            return self._error(404, "session_not_found")
        return web.json_response(self._session_json(session_id))

    async def _delete(self, request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        if self.sessions.pop(session_id, None) is None:
            self.deleted_unknown.append(session_id)
            return self._error(404, "session_not_found")
        self.deleted.append(session_id)
        return web.Response(status=204)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "backend_id": self.backend_id,
                "sessions": len(self.sessions),
                "draining": self.draining,
            }
        )
