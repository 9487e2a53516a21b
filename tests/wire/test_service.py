"""The HTTP plumbing every server shares: /metrics reports how late the event loop runs."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from wire.service import LoopLag, create_base_app


def metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_a_blocked_loop_shows_in_the_lag_metrics() -> None:
    app = create_base_app(CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        await asyncio.sleep(0.1)  # the ticker runs
        quiet = metric(
            await (await client.get("/metrics")).text(), "rtclab_event_loop_lag_max_seconds"
        )
        time.sleep(0.3)  # noqa: ASYNC251 -- the point: hog the loop, as a long GC pass would
        await asyncio.sleep(0.05)
        text = await (await client.get("/metrics")).text()
    assert quiet < 0.3
    assert metric(text, "rtclab_event_loop_lag_max_seconds") >= 0.25
    # The stall landed in the histogram's top buckets; every tick before it in the low ones.
    assert metric(text, 'rtclab_event_loop_lag_seconds_bucket{le="0.2"}') < metric(
        text, 'rtclab_event_loop_lag_seconds_bucket{le="0.5"}'
    )
    assert metric(text, "rtclab_event_loop_lag_seconds_count") >= 3


async def test_the_monitor_stops_with_the_app() -> None:
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(0.05)
    await lag.stop()
    tasks = {task.get_coro().__qualname__ for task in asyncio.all_tasks()}  # type: ignore[union-attr]
    assert "LoopLag._tick" not in tasks


def test_a_server_can_opt_out() -> None:
    watched, unwatched = CollectorRegistry(), CollectorRegistry()
    create_base_app(watched)
    create_base_app(unwatched, watch_loop=False)
    assert watched.get_sample_value("rtclab_event_loop_lag_max_seconds") == 0.0
    assert unwatched.get_sample_value("rtclab_event_loop_lag_max_seconds") is None
