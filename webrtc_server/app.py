"""The media server's internal HTTP API (signaling is its only intended client).

- ``POST /sessions`` (``application/sdp`` offer) -> 201, the answer,
  ``Location: /sessions/{id}`` and ``X-Rtclab-Backend``.
- ``GET /sessions``, ``GET /sessions/{id}``, ``DELETE /sessions/{id}`` -> 204.
- ``POST /drain``: refuse new sessions (503 + Retry-After); existing ones finish.
- ``/healthz`` ``{status, backend_id, sessions, draining}`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from webrtc_server import aioice_patch
from webrtc_server.config import MediaConfig, Topology
from webrtc_server.core.answer import prepare_offer
from webrtc_server.core.phases import CloseReason
from webrtc_server.media_socket import MediaSockets
from webrtc_server.metrics import MediaMetrics, MediaSocketCollector
from webrtc_server.registry import SESSION_ID, IdTaken, SessionRegistry
from webrtc_server.session import MediaSession
from wire.addr import format_hostport
from wire.sdp import SdpError
from wire.service import ApiError, create_base_app

log = logging.getLogger("rtclab.media")

CONFIG = web.AppKey("config", MediaConfig)
SESSIONS = web.AppKey("sessions", SessionRegistry[MediaSession])
METRICS = web.AppKey("metrics", MediaMetrics)
SOCKETS = web.AppKey("sockets", MediaSockets)

SDP = "application/sdp"
BACKEND_HEADER = "X-Rtclab-Backend"
# Signaling may choose the session's id, so it can DELETE a session whose
# POST it gave up waiting for (signaling/app.py).
SESSION_ID_HEADER = "X-Rtclab-Session-Id"


def create_app(config: MediaConfig) -> web.Application:
    aioice_patch.install()
    registry = CollectorRegistry()
    sockets = MediaSockets(config)
    registry.register(MediaSocketCollector(sockets))
    sessions: SessionRegistry[MediaSession] = SessionRegistry()
    metrics = MediaMetrics(
        registry,
        pending_setups=lambda: sessions.pending,
        peer_connections=sessions.open_peer_connections,
    )

    def health() -> dict[str, Any]:
        return {
            "backend_id": config.backend_id,
            "sessions": len(sessions),
            "draining": sessions.draining,
            "topology": config.topology.value,
            "relay": format_hostport(config.relay) if config.topology is Topology.RELAY else None,
            "media_socket": config.media_socket.value,
            # The shared socket's address (None with a socket per session).
            "media_address": (
                format_hostport(sockets.shared.local_address) if sockets.shared else None
            ),
            "forward": config.forward.value,
        }

    app = create_base_app(registry, health, client_max_size=config.max_offer_bytes)
    app[CONFIG] = config
    app[SESSIONS] = sessions
    app[METRICS] = metrics
    app[SOCKETS] = sockets
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions", list_sessions)
    app.router.add_get("/sessions/{id}", get_session)
    app.router.add_delete("/sessions/{id}", delete_session)
    app.router.add_post("/drain", drain)
    app.cleanup_ctx.append(_media_sockets)
    app.cleanup_ctx.append(_close_sessions_on_exit)
    return app


async def _media_sockets(app: web.Application) -> AsyncIterator[None]:
    sockets = app[SOCKETS]
    await sockets.start()
    try:
        yield
    finally:
        sockets.close()  # after the sessions (cleanup runs in reverse order)


async def _close_sessions_on_exit(app: web.Application) -> AsyncIterator[None]:
    yield
    sessions = app[SESSIONS]
    if len(sessions):
        log.info("closing sessions", extra={"sessions": len(sessions)})
    await sessions.close_all(CloseReason.SHUTDOWN)


def _reject(app: web.Application, status: int, code: str, message: str, **headers: str) -> ApiError:
    app[METRICS].offers_rejected.labels(code=code).inc()
    return ApiError(status, code, message, headers or None)


async def create_session(request: web.Request) -> web.Response:
    app = request.app
    config, sessions, metrics = app[CONFIG], app[SESSIONS], app[METRICS]
    if request.content_type != SDP:
        raise _reject(
            app,
            415,
            "unsupported_media_type",
            f"the offer must be {SDP}, not {request.content_type}",
        )
    if sessions.draining:
        raise _reject(
            app,
            503,
            "draining",
            "this media server is draining and takes no new sessions",
            **{"Retry-After": str(config.drain_retry_after_s)},
        )
    try:
        text = await request.text()
    except UnicodeDecodeError as exc:
        raise _reject(app, 400, "malformed", f"the offer is not text: {exc.reason}") from exc
    try:
        offer = prepare_offer(text)
    except SdpError as exc:
        status = 422 if exc.code == "no_audio" else 400
        raise _reject(app, status, exc.code, str(exc)) from exc
    # No await from here to sessions.add(): concurrent offers cannot overshoot the bound
    # or claim one id twice.
    if sessions.pending >= config.max_pending_setups:
        raise _reject(
            app,
            503,
            "too_many_pending_setups",
            f"{config.max_pending_setups} sessions are waiting for their callers to connect; "
            "try again shortly",
            **{"Retry-After": str(config.pending_retry_after_s)},
        )
    session_id = _chosen_id(app, request.headers.get(SESSION_ID_HEADER))
    session = MediaSession(
        session_id,
        config,
        metrics,
        app[SOCKETS],
        on_closed=_forget(app),
        on_peer_connection=sessions.peer_connections.add,
    )
    sessions.add(session)
    metrics.sessions.set(len(sessions))
    try:
        answer = await session.answer(offer)
    except asyncio.CancelledError:
        session.close_soon(CloseReason.ANSWER_ERROR)  # the client went away mid-answer
        raise
    except Exception as exc:
        await session.close(CloseReason.ANSWER_ERROR)
        if isinstance(exc, ApiError):
            app[METRICS].offers_rejected.labels(code=exc.code).inc()
        raise
    metrics.sessions_created.inc()
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP,
        headers={"Location": f"/sessions/{session.id}", BACKEND_HEADER: str(config.backend_id)},
    )


def _chosen_id(app: web.Application, chosen: str | None) -> str:
    """The new session's id: signaling's choice when it made one, else a fresh one."""
    sessions = app[SESSIONS]
    if chosen is None:
        return sessions.new_id()
    if not SESSION_ID.fullmatch(chosen):
        raise _reject(
            app, 400, "bad_session_id", f"{SESSION_ID_HEADER} must match {SESSION_ID.pattern}"
        )
    try:
        return sessions.claim(chosen)
    except IdTaken as exc:
        message = (
            f"session {chosen!r} was deleted before it existed"
            if exc.reason == "deleted"
            else f"session {chosen!r} exists"
        )
        raise _reject(app, 409, f"session_{exc.reason}", message) from exc


def _forget(app: web.Application) -> Callable[[MediaSession], None]:
    def on_closed(session: MediaSession) -> None:
        app[SESSIONS].remove(session, session.to_json())
        app[METRICS].sessions.set(len(app[SESSIONS]))

    return on_closed


def _session(request: web.Request) -> MediaSession:
    session_id = request.match_info["id"]
    session = request.app[SESSIONS].get(session_id)
    if session is None:
        raise ApiError(404, "session_not_found", f"no session {session_id!r}")
    return session


async def list_sessions(request: web.Request) -> web.Response:
    """Live sessions; with ``?closed=1`` also the last report of recently closed ones."""
    sessions = request.app[SESSIONS]
    for session in sessions:
        await session.refresh_rtp_stats()
    body = [session.to_json() for session in sessions]
    if request.query.get("closed") in ("1", "true"):
        body += list(sessions.closed.values())
    return web.json_response(body)


async def get_session(request: web.Request) -> web.Response:
    """A live session, or the last report of a recently closed one (state ``closed``)."""
    session_id = request.match_info["id"]
    final = request.app[SESSIONS].closed.get(session_id)
    if final is not None and request.app[SESSIONS].get(session_id) is None:
        return web.json_response(final)
    session = _session(request)
    await session.refresh_rtp_stats()
    return web.json_response(session.to_json())


async def delete_session(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    if request.app[SESSIONS].get(session_id) is None:
        # Perhaps its POST is still on the way (signaling gave up waiting):
        # make sure it is never created.
        request.app[SESSIONS].delete_unknown(session_id)
    session = _session(request)
    await session.close(CloseReason.DELETED)
    return web.Response(status=204)


async def drain(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    if not sessions.draining:
        log.info("draining", extra={"sessions": len(sessions)})
    sessions.draining = True
    request.app[METRICS].draining.set(1)
    return web.json_response({"draining": True, "sessions": len(sessions)})
