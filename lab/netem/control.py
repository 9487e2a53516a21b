"""The control API: ``create_app(config)`` builds it; the emulator lives in its cleanup context.

- ``GET /state``: impairments per direction, mappings (caller -> outbound address),
  counters and the emulator's own overhead;
- ``POST /impair``: ``{"direction": "up"|"down"|"both", "delay_ms", "jitter_ms",
  "loss", "burst": {...}|null, "rate_kbps"|null, "queue_limit_ms", "blackhole",
  "reorder", "reset"}``; fields left out keep their values, ``"reset": true``
  clears the direction first.  Answers with the impairments now in force;
- ``POST /rebind``: ``{"mode": "port"|"address", "caller": "host:port"|null}``;
  answers ``{"rebinds": [{"caller", "old", "new"}]}``;
- ``GET /stun``: every STUN message each caller sent or was sent, as it passed
  (lab/netem/stunwatch.py): when, which way, what kind, USE-CANDIDATE, and
  through which outbound address;
- ``GET /healthz``, ``GET /metrics`` (``rtclab_netem_*``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from lab.netem.emulator import Emulator, NetemConfig
from lab.netem.impair import parse_impair
from lab.netem.metrics import NetemCollector
from lab.netem.udp import RebindMode, UnknownCaller
from wire.addr import format_hostport, parse_hostport
from wire.service import ApiError, create_base_app, read_json

EMULATOR = web.AppKey("emulator", Emulator)


def create_app(
    config: NetemConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    cpu_clock: Callable[[], float] = time.process_time,
) -> web.Application:
    emulator = Emulator(config, clock=clock, cpu_clock=cpu_clock)
    registry = CollectorRegistry()
    registry.register(NetemCollector(emulator))

    def health() -> dict[str, Any]:
        udp = emulator.udp
        return {
            "udp": None if udp is None else format_hostport(emulator.udp_address),
            "tcp": None if emulator.tcp is None else format_hostport(emulator.tcp_address),
            "mappings": 0 if udp is None else len(udp.mappings),
        }

    app = create_base_app(registry, health, client_max_size=64 * 1024)
    app[EMULATOR] = emulator
    app.cleanup_ctx.append(_run_emulator)
    app.router.add_get("/state", _state)
    app.router.add_post("/impair", _impair)
    app.router.add_post("/rebind", _rebind)
    app.router.add_get("/stun", _stun)
    return app


async def _run_emulator(app: web.Application) -> AsyncIterator[None]:
    emulator = app[EMULATOR]
    await emulator.start()
    yield
    await emulator.close()


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR].state())


async def _stun(request: web.Request) -> web.Response:
    udp = request.app[EMULATOR].udp
    if udp is None:
        raise ApiError(409, "no_udp_hop", "this emulator forwards no UDP")
    return web.json_response(udp.stun.to_json())


async def _impair(request: web.Request) -> web.Response:
    body = await read_json(request)
    try:
        impair = parse_impair(body)
    except ValueError as exc:
        raise ApiError(400, "bad_impairment", str(exc)) from exc
    return web.json_response({"impairments": request.app[EMULATOR].impair(impair)})


async def _rebind(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"mode", "caller"}:
        raise ApiError(400, "bad_rebind", 'expected {"mode": "port"|"address", "caller": ...}')
    try:
        mode = RebindMode(body.get("mode", RebindMode.PORT.value))
    except ValueError as exc:
        raise ApiError(400, "bad_rebind", "mode must be port or address") from exc
    caller_text = body.get("caller")
    caller = None
    if caller_text is not None:
        try:
            caller = parse_hostport(str(caller_text))
        except ValueError as exc:
            raise ApiError(400, "bad_rebind", f"caller: {exc}") from exc
    try:
        moved = request.app[EMULATOR].rebind(mode, caller)
    except UnknownCaller as exc:
        raise ApiError(404, "unknown_caller", str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise ApiError(409, "rebind_failed", str(exc)) from exc
    return web.json_response(
        {
            "mode": mode.value,
            "rebinds": [
                {
                    "caller": format_hostport(r.caller),
                    "old": format_hostport(r.old),
                    "new": format_hostport(r.new),
                }
                for r in moved
            ],
        }
    )
