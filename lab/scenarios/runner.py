"""Execute a scenario's runs against stacks it starts itself, and keep what it saw.

For each run: start the stack (the same code as ``rtclab up``, plus the path
emulator), start the calls, perform the timeline's steps at their times,
poll the relay, the media servers and the emulator while the calls last, and
return one JSON-ready dict: the calls' results (with their audio arrival
timelines moved onto the run's clock), the steps as performed, the polled
snapshots (observe.py) and the emulator's own overhead.

Caller results, media-server reports, snapshots and steps all share the run's
clock (observe.RunClock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from lab.callers.aiortc_caller import AiortcCall, CallOptions
from lab.callers.conversation import SpeakingPlan
from lab.callers.drivers import driver
from lab.scenarios.environment import LOOPBACK, LabEnvironment, PathControl
from lab.scenarios.model import Action, CallPlan, Run, Step
from lab.scenarios.observe import Poller, RunClock, get_json
from lab.stack import Stack

log = logging.getLogger("rtclab.scenario")

Progress = Callable[[str], None]


class Calls:
    """The calls of one run: started on demand, awaited together, never leaked."""

    def __init__(
        self,
        offer_url: str,
        speaking: SpeakingPlan,
        client: str = "aiortc",
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.offer_url = offer_url
        self.speaking = speaking
        self.client = client
        self.bind_host = bind_host
        self.tasks: list[asyncio.Task[dict[str, Any]]] = []
        self.labels: list[str] = []
        self.live: list[AiortcCall] = []  # the lab's own calls, which can be ended early
        self.ramp_log: list[dict[str, Any]] = []
        self._starters: list[asyncio.Task[None]] = []

    def start(self, plan: CallPlan, label: str) -> None:
        """Start ``plan.count`` calls, ``plan.stagger_s`` apart, in the background."""
        self._starters.append(asyncio.create_task(self._start(plan, label)))

    async def _start(self, plan: CallPlan, label: str) -> None:
        for index in range(plan.count):
            if index:
                await asyncio.sleep(plan.stagger_s)
            self.labels.append(label)
            self.tasks.append(asyncio.create_task(self._one(plan.seconds)))

    async def _one(self, seconds: float) -> dict[str, Any]:
        if self.client == "aiortc":  # the lab's own caller takes a speaking plan
            options = CallOptions(
                seconds=seconds,
                bind_host=self.bind_host,
                speaking=self.speaking,
                keep_arrivals=True,
            )
            call = AiortcCall(self.offer_url, options)
            self.live.append(call)
            return await call.run()
        return await driver(self.client).call(self.offer_url, seconds=seconds)

    def ramp(self, args: Mapping[str, Any], clock: RunClock, poller: Poller) -> None:
        """Add calls step by step until the media servers see loss or stalls (or a cap)."""
        self._starters.append(asyncio.create_task(self._ramp(args, clock, poller)))

    async def _ramp(self, args: Mapping[str, Any], clock: RunClock, poller: Poller) -> None:
        per_step, every_s = int(args["per_step"]), float(args["every_s"])
        cap, hold_s = int(args["max_calls"]), float(args["hold_s"])
        limit = RampLimit(float(args.get("max_loss", 0.01)), float(args.get("max_gap_ms", 200.0)))
        # Long enough for any ramp; the calls are ended when it stops.
        seconds = (cap / per_step + 1) * every_s + hold_s + 60.0
        reason = "cap"
        while len(self.tasks) < cap:
            level = len(self.tasks) + per_step
            self._start_now(CallPlan(per_step, seconds, stagger_s=0.2), f"{level} concurrent")
            await asyncio.sleep(every_s)
            worst = limit.worst(poller.media, poller.loop_lag, since_s=clock.now() - every_s / 2)
            self.ramp_log.append({"t": round(clock.now(), 2), "concurrent": level, **worst})
            if worst["degraded"]:
                reason = "degraded"
                break
        self.ramp_log.append({"stopped": reason, "t": round(clock.now(), 2)})
        await asyncio.sleep(hold_s)
        for call in self.live:
            call.stop()

    def _start_now(self, plan: CallPlan, label: str) -> None:
        for _ in range(plan.count):
            self.labels.append(label)
            self.tasks.append(asyncio.create_task(self._one(plan.seconds)))

    async def results(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, result) of every call, once all have ended."""
        await asyncio.gather(*self._starters)
        results = await asyncio.gather(*self.tasks)
        return list(zip(self.labels, results, strict=True))

    async def cancel(self) -> None:
        for task in [*self._starters, *self.tasks]:
            task.cancel()
        await asyncio.gather(*self._starters, *self.tasks, return_exceptions=True)


class RampLimit:
    """When a ramp must stop: a live session's uplink loss or largest stall over a limit."""

    def __init__(self, max_loss: float, max_gap_ms: float) -> None:
        self.max_loss = max_loss
        self.max_gap_ms = max_gap_ms

    def worst(
        self, media: list[dict[str, Any]], loop_lag: list[dict[str, Any]], since_s: float
    ) -> dict[str, Any]:
        latest: dict[str, dict[str, Any]] = {}
        for snapshot in media:
            if snapshot["t"] >= since_s:
                for session in snapshot["sessions"]:
                    if session.get("state") == "connected":
                        latest[str(session["id"])] = session
        losses = [s.get("uplink_loss") or 0.0 for s in latest.values()]
        gaps = [s.get("uplink_max_gap_ms") or 0.0 for s in latest.values()]
        loss, gap = max(losses, default=0.0), max(gaps, default=0.0)
        lag = {
            key: value for key, value in (loop_lag[-1] if loop_lag else {}).items() if key != "t"
        }
        return {
            "sessions": len(latest),
            "worst_uplink_loss": loss,
            "worst_uplink_gap_ms": gap,
            "degraded": loss > self.max_loss or gap > self.max_gap_ms,
            "loop_lag_max_ms": lag,
        }


# A kill target resolved at the step: the relay instance carrying the most flows,
# so a failover always moves calls whatever the kernel's hash chose.
BUSIEST_RELAY = "busiest-relay"


async def busiest_relay(stack: Stack) -> str:
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for name, admin in stack.relay_admin_urls().items():
            flows = await get_json(http, f"{admin}/flows")
            counts[name] = len(flows or [])
    return max(counts, key=lambda name: counts[name])


async def perform(
    step: Step,
    stack: Stack,
    path: PathControl | None,
    calls: Calls,
    clock: RunClock,
    poller: Poller,
) -> dict[str, Any]:
    """Do one step; return what it did (its outcome goes into results.json)."""
    args = dict(step.args)
    if step.action is Action.IMPAIR:
        if path is None:
            raise RuntimeError("an impair step needs a controllable path (Run.netem)")
        direction = args.pop("direction", "both")
        return {"impairments": await path.impair(direction, **args)}
    if step.action is Action.REBIND:
        if path is None:
            raise RuntimeError("a rebind step needs a controllable path (Run.netem)")
        waited: dict[str, Any] = {}
        if "after_connected" in args:
            waited = await _until_connected(
                poller,
                clock,
                int(args["after_connected"]),
                settle_s=float(args.get("settle_s", 0.0)),
                wait_max_s=float(args.get("wait_max_s", 30.0)),
            )
        moved = await path.rebind(args.get("mode", "port"), args.get("caller"))
        return {"rebinds": moved, **waited}
    if step.action is Action.KILL:
        sig = signal.Signals[args.get("signal", "SIGKILL")]
        part = args["part"]
        if part == BUSIEST_RELAY:
            part = await busiest_relay(stack)
        await stack.kill(part, sig)
        return {"killed": part, "signal": sig.name}
    if step.action is Action.RESTART:
        started = time.monotonic()
        await stack.restart(args["part"])
        return {
            "restarted": args["part"],
            "healthy_after_ms": round((time.monotonic() - started) * 1000),
        }
    if step.action is Action.DRAIN:
        await stack.drain(int(args["media"]))
        return {"draining": f"media-{int(args['media']) + 1}"}
    if step.action is Action.START_CALLS:
        plan = CallPlan(
            int(args["count"]), float(args["seconds"]), float(args.get("stagger_s", 0.3))
        )
        calls.start(plan, str(args.get("label", "later")))
        return {"started": plan.count}
    if step.action is Action.RAMP:
        if calls.client != "aiortc":
            raise RuntimeError("a ramp ends its calls early: only the lab's own caller can")
        calls.ramp(args, clock, poller)
        return {"ramp": "started"}
    raise ValueError(f"unknown action {step.action}")


async def _until_connected(
    poller: Poller, clock: RunClock, count: int, *, settle_s: float, wait_max_s: float
) -> dict[str, Any]:
    """Wait until ``count`` sessions have connected, and ``settle_s`` more.

    A client in its own process (a browser on a loaded machine) may take many
    seconds to start: a move planned for a fixed time would then fall before
    its call exists.  Gives up after ``wait_max_s`` (the move goes ahead; the
    analysis does not count a call that connected after it).
    """
    began = clock.now()
    while (connected := poller.connected_at(count)) is None:
        if clock.now() - began > wait_max_s:
            return {"waited_s": round(clock.now() - began, 3), "all_connected": False}
        await asyncio.sleep(0.1)
    await clock.sleep_until(connected + settle_s)
    return {"waited_s": round(clock.now() - began, 3), "all_connected": True}


def place_call_on_clock(result: dict[str, Any], clock: RunClock, label: str) -> dict[str, Any]:
    """Move a call result's timelines onto the run's clock (ms since the run's origin).

    The caller reports arrivals in ms since its own offer POST; the media
    server reports the uplink in Unix time.  Both become run-clock ms, so one
    plot and one analysis see caller, server and steps on the same axis.
    """
    call = dict(result)
    start = clock.of_epoch(result.get("started")) or 0.0
    call["label"] = label
    call["start_s"] = start
    arrivals = call.pop("arrivals_ms", None) or []
    downlink_ms = [round(start * 1000 + at_ms) for at_ms, _pts in arrivals]
    server = result.get("server_view") or {}
    uplink = server.get("uplink_timeline") or {}
    call["timeline"] = {
        "downlink_ms": downlink_ms,
        "uplink_segments_ms": _uplink_segments(uplink, clock),
        "states": [
            [round(start * 1000 + (ms or 0)), kind, state]
            for ms, kind, state in result.get("states", [])
        ],
        "server_closed_ms": _ms(clock.of_epoch(server.get("closed"))),
        "server_close_reason": server.get("close_reason"),
        "end_ms": round(
            start * 1000
            + ((result.get("setup_ms") or {}).get("answer") or 0)
            + (result.get("talk_ms") or 0)
        ),
    }
    return call


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _uplink_segments(uplink: dict[str, Any], clock: RunClock) -> list[list[int]]:
    """Stretches of continuous uplink audio as the server heard them: first..last minus gaps."""
    first, last = clock.of_epoch(uplink.get("first")), clock.of_epoch(uplink.get("last"))
    if first is None or last is None:
        return []
    segments: list[list[int]] = []
    start = first
    for gap_start_epoch, gap_s in uplink.get("gaps", []):
        gap_start = clock.of_epoch(gap_start_epoch)
        if gap_start is None:
            continue
        segments.append([round(start * 1000), round(gap_start * 1000)])
        start = gap_start + gap_s
    segments.append([round(start * 1000), round(last * 1000)])
    return segments


async def execute_run(
    run: Run, log_dir: Path, progress: Progress, lab: LabEnvironment = LOOPBACK
) -> dict[str, Any]:
    """Run one stack lifetime: calls, steps, polling; return the run's data."""
    config = lab.stack_config(run.netem, run.stack, log_dir=log_dir)
    stack = lab.make_stack(config)
    progress(f"{run.label}: starting the stack")
    async with stack:
        path = lab.path(stack) if run.netem else None
        clock = RunClock()
        calls = Calls(
            f"{stack.caller_signaling_url}/v1/calls",
            SpeakingPlan(**dict(run.caller)),
            run.client,
            lab.caller_host,
        )
        poller = Poller(stack, clock, run.poll_interval_s)
        steps: list[dict[str, Any]] = []
        try:
            if path is not None and run.impair:
                impair = dict(run.impair)
                await path.impair(impair.pop("direction", "both"), **impair)
            poller.start()
            progress(f"{run.label}: {run.calls.count} call(s) of {run.calls.seconds:g} s")
            calls.start(run.calls, "initial")
            for step in sorted(run.steps, key=lambda s: s.at_s):
                await clock.sleep_until(step.at_s)
                progress(f"{run.label}: {step.describe()}")
                record: dict[str, Any] = {
                    "at_s": step.at_s,
                    "action": step.action.value,
                    "args": dict(step.args),
                    "describe": step.describe(),
                }
                try:
                    record["outcome"] = await perform(step, stack, path, calls, clock, poller)
                except Exception as exc:
                    log.exception("step failed", extra={"step": step.describe()})
                    record["error"] = f"{type(exc).__name__}: {exc}"
                record["done_at_s"] = round(clock.now(), 3)
                steps.append(record)
            results = await calls.results()
        except BaseException:
            await calls.cancel()
            raise
        finally:
            await poller.stop()
            overhead = stun = None
            if path is not None:
                with contextlib.suppress(Exception):
                    overhead = (await path.state()).get("overhead")
                with contextlib.suppress(Exception):
                    stun = await path.stun()
                await path.close()
    return {
        "label": run.label,
        "tags": dict(run.tags),
        "config": {
            "media_servers": config.media_servers,
            "rebind": config.rebind,
            "topology": config.topology,
            "netem": config.netem,
            "lab": lab.name,
            "impair": dict(run.impair),
            "calls": {"count": run.calls.count, "seconds": run.calls.seconds},
            "client": run.client,
        },
        "steps": steps,
        "calls": [place_call_on_clock(result, clock, label) for label, result in results],
        "snapshots": {
            "relay": poller.relay,
            "media": poller.media,
            "cpu": poller.cpu,
            "loop_lag": poller.loop_lag,
        },
        "ramp": calls.ramp_log,
        "netem_overhead": _overhead_summary(overhead),
        "stun": _stun_on_clock(stun, clock),
        "duration_s": round(clock.now(), 2),
    }


def _stun_on_clock(stun: dict[str, Any] | None, clock: RunClock) -> dict[str, Any] | None:
    """The path's STUN record with its Unix times moved onto the run's clock (seconds)."""
    if not stun:
        return None
    return {
        **stun,
        "callers": {
            caller: [[clock.of_epoch(entry[0]), *entry[1:]] for entry in entries]
            for caller, entries in stun.get("callers", {}).items()
        },
    }


def _overhead_summary(overhead: dict[str, Any] | None) -> dict[str, Any] | None:
    if not overhead:
        return None
    udp = overhead.get("lateness_us", {}).get("udp", {})
    summary = (
        f"added {udp.get('p50', 0):.0f} us p50 / {udp.get('p99', 0):.0f} us p99 beyond the "
        f"configured delay, {overhead.get('cpu_percent_of_core', 0):.1f} % of a core"
    )
    return {**overhead, "summary": summary}
