"""HTTP plumbing every rtclab server shares: JSON errors, /healthz, /metrics, serving.

This is the one module of ``wire`` that is not pure protocol code: the three
servers must not import one another, yet each needs the same error format, the
same health and metrics endpoints and the same clean shutdown, and those are
written once here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import click
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger("rtclab.service")

REGISTRY = web.AppKey("registry", CollectorRegistry)
HealthFn = Callable[[], dict[str, Any]]
HEALTH: web.AppKey[HealthFn] = web.AppKey("health")


class ApiError(Exception):
    """An error a handler returns to the client as ``{"error": {code, message}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map ApiError and aiohttp's own HTTP errors to the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, exc.text or exc.reason, headers)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal", "internal server error")


async def _healthz(request: web.Request) -> web.Response:
    body = {"status": "ok", **request.app[HEALTH]()}
    return web.json_response(body)


async def _metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


class LoopLag:
    """How late this process's event loop runs what is due.

    A ticker asks to wake every ``interval_s``; how much later it wakes is time the
    loop spent elsewhere: a long callback, a garbage-collector pass, no free core.
    Audio moves in 20 ms frames, so lag of tens of milliseconds is already audible,
    and a stall a call measures can be pinned on the process whose loop lagged.
    """

    BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

    def __init__(self, registry: CollectorRegistry | None = None, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.worst_s = 0.0  # the largest lag seen since start
        self._task: asyncio.Task[None] | None = None
        self._histogram: Histogram | None = None
        if registry is not None:
            self._histogram = Histogram(
                "rtclab_event_loop_lag_seconds",
                "How late the event loop woke a 20 ms ticker.",
                buckets=self.BUCKETS,
                registry=registry,
            )
            Gauge(
                "rtclab_event_loop_lag_max_seconds",
                "The largest event-loop lag seen since the process started.",
                registry=registry,
            ).set_function(lambda: self.worst_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - due)
            self.worst_s = max(self.worst_s, lag)
            if self._histogram is not None:
                self._histogram.observe(lag)


class ProcessGauges:
    """What a leak looks like from inside a process: open files, sockets, threads, tasks.

    Read when ``/metrics`` is scraped (from /proc on Linux), so a harness that
    drives a server hard and then waits can ask the server itself whether it
    let go of everything.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        for name, text, read in (
            ("rtclab_process_open_fds", "File descriptors open now.", _open_fds),
            ("rtclab_process_sockets", "Sockets open now (TCP and UDP).", _sockets),
            ("rtclab_process_threads", "OS threads alive now.", threading.active_count),
            ("rtclab_asyncio_tasks", "asyncio tasks not yet done.", _tasks),
        ):
            Gauge(name, text, registry=registry).set_function(read)


def _fd_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def _open_fds() -> float:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return float("nan")


def _sockets() -> float:
    try:
        return float(sum(1 for target in _fd_targets() if target.startswith("socket:")))
    except OSError:
        return float("nan")


def _tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped from outside the loop
        return float("nan")


def create_base_app(
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]] = dict,
    *,
    client_max_size: int = 1024**2,
    watch_loop: bool = True,
) -> web.Application:
    """An aiohttp app with the JSON error middleware, /healthz and /metrics.

    /metrics reports the process's open files, sockets, threads and tasks
    (``ProcessGauges``) and, with ``watch_loop``, its event-loop lag (``LoopLag``)
    while the app runs.
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=client_max_size)
    app[REGISTRY] = registry
    app[HEALTH] = health
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    ProcessGauges(registry)
    if watch_loop:
        lag = LoopLag(registry)

        async def watch(_: web.Application) -> AsyncIterator[None]:
            lag.start()
            yield
            await lag.stop()

        app.cleanup_ctx.append(watch)
    return app


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"body is not JSON: {exc}") from exc


async def serve_until_signalled(
    app: web.Application,
    host: str,
    port: int,
    *,
    ready: Callable[[], None] | None = None,
    shutdown_timeout_s: float = 5.0,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT, then shut down cleanly.

    Cleanup contexts run on the way out, so sockets, tasks and peer
    connections an app opened are closed before the process exits.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("listening", extra={"http": f"{host}:{port}"})
        if ready is not None:
            ready()
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("stopped")


def run(main: Awaitable[None], *, use_uvloop: bool = True) -> None:
    """Run a server's main coroutine on uvloop when installed (stdlib loop otherwise)."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
        else:
            uvloop.run(main)  # type: ignore[arg-type]
            return
    asyncio.run(main)  # type: ignore[arg-type]


# --- command-line options every server shares -------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def logging_options(func: F) -> F:
    """``--log-level`` and ``--log-format``; the command calls :func:`wire.logs.configure`."""
    func = click.option(
        "--log-format",
        type=click.Choice(["json", "text"]),
        default="json",
        show_default=True,
        envvar="RTCLAB_LOG_FORMAT",
        help="Structured JSON lines, or text for reading by eye.",
    )(func)
    func = click.option(
        "--log-level",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        default="INFO",
        show_default=True,
        envvar="RTCLAB_LOG_LEVEL",
        help="INFO logs lifecycle and state changes only, never per packet.",
    )(func)
    return func


def secret_option(func: F) -> F:
    """``--secret``: the route-token key shared by relay and media servers."""
    return click.option(
        "--secret",
        envvar="RTCLAB_SECRET",
        default=None,
        help="Key that signs route tokens and derives ICE passwords; relay and media "
        "servers must share it. [env: RTCLAB_SECRET; default: a built-in "
        "development key, fine on loopback only]",
    )(func)
