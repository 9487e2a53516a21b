"""What a scenario run observes while its calls last, on one clock.

The run's clock is seconds since the run's origin (Unix time, so it compares
across processes).  The poller snapshots, at a fixed interval: the relay's
flows, drops and takeovers; each media server's sessions; every process's CPU
and the machine's CPU pressure; every process's event-loop lag.  Everything
here only reads: the timeline's actions live in runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import aiohttp

from lab.stack import Stack, cpu_pressure_seconds
from wire.service import LoopLag


class RunClock:
    """Seconds since the run's origin, from Unix time (comparable across processes)."""

    def __init__(self) -> None:
        self.origin = time.time()

    def now(self) -> float:
        return time.time() - self.origin

    def of_epoch(self, epoch: float | None) -> float | None:
        return None if epoch is None else round(epoch - self.origin, 4)

    async def sleep_until(self, at_s: float) -> None:
        delay = at_s - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class Poller:
    """Snapshots of the relay, media servers and emulator every ``interval_s``."""

    def __init__(self, stack: Stack, clock: RunClock, interval_s: float) -> None:
        self.stack = stack
        self.clock = clock
        self.interval_s = interval_s
        self.relay: list[dict[str, Any]] = []
        self.media: list[dict[str, Any]] = []
        # CPU seconds used so far by each part and by this process (the callers), and
        # the seconds some task waited for a CPU (the machine's pressure), so far.
        self.cpu: list[dict[str, Any]] = []
        # The largest event-loop lag each process has seen so far (ms): a stall the
        # calls measured can be pinned on the process whose loop stood still.
        self.loop_lag: list[dict[str, Any]] = []
        self.own_lag = LoopLag()
        self._task: asyncio.Task[None] | None = None

    def connected_at(self, count: int) -> float | None:
        """When the media servers first showed ``count`` sessions connected (None: not yet).

        A session counts once it was seen connected, even if it has closed since.
        """
        seen: set[tuple[int, Any]] = set()
        for snapshot in self.media:
            for session in snapshot["sessions"]:
                if session.get("state") == "connected":
                    seen.add((snapshot["backend"], session.get("id")))
            if len(seen) >= count:
                return float(snapshot["t"])
        return None

    def start(self) -> None:
        self.own_lag.start()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._poll_once()  # the final state, after the calls ended
        await self.own_lag.stop()

    async def _loop(self) -> None:
        while True:
            await self._poll_once()
            await asyncio.sleep(self.interval_s)

    async def _poll_once(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval_s))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            at = round(self.clock.now(), 3)
            usage = {name: child.cpu_seconds() for name, child in self.stack.children.items()}
            pressure = cpu_pressure_seconds()
            self.cpu.append(
                {
                    "t": at,
                    "callers": round(time.process_time(), 3),
                    **usage,
                    "pressure": None if pressure is None else round(pressure, 4),
                    "cores": os.cpu_count(),
                }
            )
            lag: dict[str, Any] = {"t": at, "callers": round(1000 * self.own_lag.worst_s, 1)}
            for name, admin in self.stack.relay_admin_urls().items():
                flows = await get_json(http, f"{admin}/flows")
                metrics = await get_text(http, f"{admin}/metrics")
                lag[name] = _loop_lag_ms(metrics)
                self.relay.append(
                    {
                        "t": at,
                        "instance": name,
                        "up": flows is not None,
                        "flows": _compact_flows(flows or []),
                        "drops": relay_drops(metrics or ""),
                        "takeovers": metric_by_label(
                            metrics or "", "rtclab_lb_state_takeovers_total", "upstream"
                        ),
                    }
                )
            for index in range(len(self.stack.media_ports)):
                media_url = self.stack.media_url(index)
                sessions = await get_json(http, f"{media_url}/sessions?closed=1")
                lag[f"media-{index + 1}"] = _loop_lag_ms(
                    await get_text(http, f"{media_url}/metrics")
                )
                self.media.append(
                    {
                        "t": at,
                        "backend": index + 1,
                        "up": sessions is not None,
                        "sessions": [
                            {
                                "id": s.get("id"),
                                "state": s.get("state"),
                                "remote": s.get("remote"),
                                "close_reason": s.get("close_reason"),
                                "uplink_loss": (s.get("uplink") or {}).get("loss_ratio"),
                                "uplink_max_gap_ms": (s.get("uplink") or {}).get("max_gap_ms"),
                            }
                            for s in sessions or []
                        ],
                    }
                )
            self.loop_lag.append(lag)


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with http.get(url) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def get_text(http: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with http.get(url) as response:
            return await response.text() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


def _compact_flows(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("client", "backend_id", "upstream", "packets_up", "packets_down")
    return [{key: flow.get(key) for key in keep} for flow in flows]


def _loop_lag_ms(metrics_text: str | None) -> float | None:
    """The largest event-loop lag a process reported (over its workers), in ms."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in (metrics_text or "").splitlines()
        if line.startswith(
            ("rtclab_event_loop_lag_max_seconds ", "rtclab_event_loop_lag_max_seconds{")
        )
    ]
    return round(1000 * max(values), 1) if values else None


def relay_drops(metrics_text: str) -> dict[str, float]:
    """Drop counts by reason from the relay's Prometheus text."""
    return metric_by_label(metrics_text, "rtclab_lb_drops_total", "reason")


def metric_by_label(metrics_text: str, name: str, label: str) -> dict[str, float]:
    """``name{label="x",...} value`` lines summed by the value of ``label``."""
    values: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line:
            key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            with contextlib.suppress(ValueError):
                values[key] = values.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return values
