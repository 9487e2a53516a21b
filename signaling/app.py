"""The public signaling API: ``create_app(config)`` builds it.

Routes (RFC 9725 WHIP where it applies):

- ``POST /v1/calls`` (alias ``POST /v1/realtime/calls``): SDP offer in, 201
  with the answer, ``Location: /v1/calls/{id}`` and ``X-Rtclab-Backend``.
- ``PUT /v1/calls/{id}``: the same with a call id the caller chose, so it can
  DELETE the call even if it never saw the answer (its request timed out).
- ``GET /v1/calls/{id}``: the call record and the media server's live session.
- ``DELETE /v1/calls/{id}``: hang up on the media server that holds it (or is
  being asked to: the call is deleted while it is placed).
- ``PATCH /v1/calls/{id}``: 405; trickle ICE and ICE restart are not supported.
- ``GET /v1/backends``: what signaling believes about each media server.
- ``GET /``: a page that calls the agent from a browser; its scripts under ``/static/``.
- ``GET /openapi.json``: this API's OpenAPI 3.1 document (``signaling/openapi.json``).
- ``/healthz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from signaling.backends import Backend, BackendRegistry
from signaling.calls import CALL_ID, CallRecord, CallState, CallTable, new_call_id
from signaling.config import SignalingConfig
from signaling.core import offer
from signaling.media_client import Failed, MediaClient, Rejected
from signaling.metrics import SignalingMetrics
from signaling.placing import abandon, place_offer
from wire.service import ApiError, create_base_app

log = logging.getLogger("rtclab.signaling")

CONFIG = web.AppKey("config", SignalingConfig)
BACKENDS = web.AppKey("backends", BackendRegistry)
CALLS = web.AppKey("calls", CallTable)
MEDIA = web.AppKey("media", MediaClient)
METRICS = web.AppKey("metrics", SignalingMetrics)
WallClock = Callable[[], float]
WALL_CLOCK: web.AppKey[WallClock] = web.AppKey("wall_clock")

CALLS_PATH = "/v1/calls"
CALL_PATH_ALIASES = ("/v1/calls", "/v1/realtime/calls")
BACKEND_HEADER = "X-Rtclab-Backend"
# The call page: plain files, no build step; only these types are served.
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
OPENAPI = Path(__file__).parent / "openapi.json"
NO_RENEGOTIATION = (
    "trickle ICE and ICE restart are not supported: the media server (aiortc) ignores "
    "re-offers on a live session. To recover, DELETE this call and POST a new offer."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    config: SignalingConfig,
    *,
    wall_clock: WallClock = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The signaling app; media servers are polled from startup to cleanup."""
    registry = CollectorRegistry()
    backends = BackendRegistry(config, monotonic)
    calls = CallTable(config.max_calls)
    metrics = SignalingMetrics(
        registry, healthy_backends=backends.healthy_count, calls_tracked=calls.__len__
    )

    def health() -> dict[str, object]:
        return {
            "backends": len(backends.backends),
            "backends_healthy": backends.healthy_count(),
            "backends_accepting": backends.placeable_count(),
            "calls": len(calls),
        }

    app = create_base_app(registry, health, client_max_size=config.max_offer_bytes)
    # Outermost, so the latency and status seen are those the client gets.
    app.middlewares.insert(0, _observe_requests)
    app[CONFIG] = config
    app[BACKENDS] = backends
    app[CALLS] = calls
    app[MEDIA] = MediaClient(
        forward_timeout_s=config.forward_timeout_s, health_timeout_s=config.health_timeout_s
    )
    app[METRICS] = metrics
    app[WALL_CLOCK] = wall_clock

    for prefix in CALL_PATH_ALIASES:
        collection = app.router.add_resource(prefix)
        collection.add_route("POST", post_call)
        collection.add_route("*", _method_not_allowed("POST"))
        item = app.router.add_resource(prefix + "/{call_id}")
        item.add_route("GET", get_call)
        item.add_route("PUT", put_call)
        item.add_route("DELETE", delete_call)
        item.add_route("PATCH", patch_call)
        item.add_route("*", _method_not_allowed("GET, PUT, DELETE"))
    app.router.add_get("/v1/backends", list_backends)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page)

    app.cleanup_ctx.append(_media_client)
    app.cleanup_ctx.append(_health_poller)
    return app


# --- handlers ------------------------------------------------------------------


async def post_call(request: web.Request) -> web.StreamResponse:
    return await _create_call(request, new_call_id())


async def put_call(request: web.Request) -> web.StreamResponse:
    """Create a call with the caller's id (201), or say it exists (409)."""
    call_id = request.match_info["call_id"]
    if not CALL_ID.fullmatch(call_id):
        raise ApiError(
            400, "bad_call_id", f"a call id must match {CALL_ID.pattern}, not {call_id!r}"
        )
    if request.app[CALLS].get(call_id) is not None:
        raise ApiError(409, "call_exists", f"call {call_id!r} exists; DELETE it first")
    return await _create_call(request, call_id)


class _Placing:
    """The record of a call being placed, kept current attempt by attempt."""

    def __init__(self, calls: CallTable, record: CallRecord) -> None:
        self.calls = calls
        self.record = record
        calls.add(record)

    def attempt(self, backend: Backend, session_id: str) -> None:
        if self.wanted:
            self.record = replace(
                self.record, media_url=backend.url, session_path=f"/sessions/{session_id}"
            )
            self.calls.add(self.record)

    @property
    def wanted(self) -> bool:
        return self.calls.get(self.record.call_id) is self.record

    def finish(self, record: CallRecord | None) -> None:
        """The placement ended: keep ``record`` (placed or failed), or forget the call."""
        if not self.wanted:
            return
        if record is None:
            self.calls.remove(self.record.call_id)
        else:
            self.calls.add(record)


async def _create_call(request: web.Request, call_id: str) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    offer.check_headers(
        request.headers.get("Content-Type"), request.content_length, config.max_offer_bytes
    )
    try:
        body = await request.read()  # aiohttp stops reading past client_max_size
    except web.HTTPRequestEntityTooLarge as exc:
        raise offer.too_large(config.max_offer_bytes) from exc
    offer_sdp = offer.parse_offer(body, config.max_offer_bytes)

    placing = _Placing(
        app[CALLS],
        CallRecord(
            call_id=call_id,
            backend_id=None,
            media_url="",
            session_path="",
            created_unix_s=app[WALL_CLOCK](),
            state=CallState.PLACING,
        ),
    )
    try:
        placed = await place_offer(app[BACKENDS], app[MEDIA], app[METRICS], offer_sdp, placing)
    except ApiError as exc:
        # 503: kept as failed, so a caller that chose the id can still DELETE it.
        failed = replace(placing.record, state=CallState.FAILED)
        placing.finish(failed if exc.status == 503 else None)
        raise
    except BaseException:
        placing.finish(None)
        raise
    if isinstance(placed, Rejected):
        placing.finish(None)
        log.info("offer rejected by media server", extra={"status": placed.status})
        return web.Response(
            status=placed.status, body=placed.body, content_type=placed.content_type
        )

    backend = placed.backend
    assert backend.health.backend_id is not None, "placed on a backend that never reported"
    record = replace(
        placing.record,
        backend_id=backend.health.backend_id,
        media_url=backend.url,
        session_path=placed.created.session_path,
        state=CallState.PLACED,
    )
    placing.finish(record)
    app[METRICS].calls_created.labels(str(record.backend_id)).inc()
    log.info(
        "call created",
        extra={
            "call_id": record.call_id,
            "backend": record.backend_id,
            "session": record.session_path,
            "attempts": placed.attempts,
        },
    )
    return web.Response(
        status=201,
        text=placed.created.answer,
        content_type=offer.SDP_CONTENT_TYPE,
        headers={
            "Location": f"{CALLS_PATH}/{record.call_id}",
            BACKEND_HEADER: str(record.backend_id),
        },
    )


def _record(request: web.Request) -> CallRecord:
    call_id = request.match_info["call_id"]
    record = request.app[CALLS].get(call_id)
    if record is None:
        raise ApiError(404, "call_not_found", f"no call {call_id!r}")
    return record


async def get_call(request: web.Request) -> web.StreamResponse:
    record = _record(request)
    body = record.to_json()
    if record.state is not CallState.PLACED:
        body["session"] = None
        body["session_error"] = {
            "code": record.state.value,
            "message": "the call is being placed"
            if record.state is CallState.PLACING
            else "no media server took the call",
        }
        return web.json_response(body)
    lookup = await request.app[MEDIA].get_session(record.session_url)
    body["session"] = lookup.session
    body["session_error"] = (
        None
        if lookup.error_code is None
        else {"code": lookup.error_code, "message": lookup.error_message}
    )
    return web.json_response(body)


async def delete_call(request: web.Request) -> web.StreamResponse:
    record = _record(request)
    if record.state is not CallState.PLACED:
        # Forget it first, so a placement in progress sees the call is unwanted;
        # then make sure the attempt's session is closed or never created.
        request.app[CALLS].remove(record.call_id)
        if record.session_path:
            await abandon(request.app[MEDIA], request.app[METRICS], record.session_url)
        log.info("call deleted", extra={"call_id": record.call_id, "state": record.state.value})
        return web.Response(status=204)
    status = await request.app[MEDIA].delete_session(record.session_url)
    if isinstance(status, Failed):
        # Kept, so the caller can try again: the session may still be running.
        raise ApiError(
            502,
            "backend_unreachable",
            f"media server {record.backend_id} did not answer ({status.detail}); try again",
        )
    if status not in (200, 204, 404):  # 404: the session had ended already
        raise ApiError(502, "backend_error", f"media server {record.backend_id} answered {status}")
    request.app[CALLS].remove(record.call_id)
    request.app[METRICS].calls_deleted.labels(str(record.backend_id)).inc()
    log.info("call deleted", extra={"call_id": record.call_id, "backend": record.backend_id})
    return web.Response(status=204)


async def patch_call(request: web.Request) -> web.StreamResponse:
    _record(request)  # an unknown call is still a 404
    raise ApiError(405, "not_supported", NO_RENEGOTIATION, headers={"Allow": "GET, DELETE"})


def _method_not_allowed(allow: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; allowed: {allow}",
            headers={"Allow": allow},
        )

    return handler


async def openapi(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


async def list_backends(request: web.Request) -> web.StreamResponse:
    return web.json_response({"backends": request.app[BACKENDS].to_json()})


async def page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    path = (STATIC_DIR / name).resolve()
    content_type = STATIC_TYPES.get(path.suffix)
    inside = path.parent == STATIC_DIR.resolve()  # whatever a decoded name held
    if content_type is None or not inside or not path.is_file():
        raise ApiError(404, "not_found", f"no file {request.path!r}")
    # no-cache: a page edited while `rtclab up` runs is picked up on reload.
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


# --- middleware and lifecycle ---------------------------------------------------


@web.middleware
async def _observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].request_duration.labels(route, request.method, str(status)).observe(
            time.perf_counter() - started
        )


async def _media_client(app: web.Application) -> AsyncIterator[None]:
    media = app[MEDIA]
    await media.start()
    try:
        yield
    finally:
        await media.close()


async def _health_poller(app: web.Application) -> AsyncIterator[None]:
    backends, media = app[BACKENDS], app[MEDIA]
    # One round before serving, so the first call already has somewhere to go.
    await backends.poll_all(media)
    log.info(
        "backends polled",
        extra={"backends": len(backends.backends), "healthy": backends.healthy_count()},
    )
    task = asyncio.create_task(backends.run_poller(media), name="signaling-health-poller")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
