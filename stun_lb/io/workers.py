"""``--workers N``: N relay processes on one public UDP port, behind one admin address.

Each worker is the single-process relay unchanged (its own flow table, its own
shared-state client) with SO_REUSEPORT on the public socket, so the kernel
hashes each client address onto one worker, as the published relay spreads
its readers.  A worker serves its admin app on a private Unix socket; the
parent runs no relay and serves ``--admin``:

* ``/healthz`` lists the workers (pid, alive, exit code, flows);
* ``/metrics`` is every worker's metrics with a ``worker`` label (the same
  names as one process; sum over ``worker`` for the relay), plus
  ``rtclab_lb_workers{state}`` and ``rtclab_lb_worker_up{worker}``;
* ``/flows`` is every worker's flows, each with its ``worker``.

A worker that dies is NOT restarted.  It is logged at ERROR, shown as dead in
/healthz (``status: degraded``) and in /metrics, and the kernel rehashes its
clients over the workers left.  The kernel picks a socket as the address
hash scaled to the NUMBER of sockets, so every change of that number also
moves clients between healthy workers (measured: a second relay joining a
port took 28-56% of the first one's clients).  A replacement would be one
more such change, cutting calls of healthy workers (until their next STUN
check, or a shared-state lookup) each time, and a worker crashing in a loop
would do it over and over.  Restarting the relay is left to whatever
supervises it, which the parent helps by exiting 1 once every worker is gone.

Workers die with the parent: each asks the kernel for SIGTERM when its
parent exits (PR_SET_PDEATHSIG), so even a SIGKILLed parent leaves no
orphan.  On SIGTERM or SIGINT the parent sends SIGTERM to every worker,
waits for them, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from stun_lb.core.config import ForwardMode, RelayConfig, redact_url
from stun_lb.io.worker import worker_main
from wire.addr import format_hostport
from wire.service import create_base_app

log = logging.getLogger("stun_lb")

# Spawning imports the relay afresh in each worker: nothing of the parent's
# loop or sockets leaks into a child, as it could with fork.
_CONTEXT = multiprocessing.get_context("spawn")
# Only guards against hangs: a worker imports and binds in well under a second.
_READY_TIMEOUT_S = 30.0
# A worker closes its flows and sockets in milliseconds; after this it is killed.
_STOP_TIMEOUT_S = 10.0
# An admin request to a worker that takes longer than this marks it unresponsive.
_ASK_TIMEOUT_S = 2.0


class WorkersLost(RuntimeError):
    """Every worker has exited: the parent has nothing left to serve."""


@dataclasses.dataclass(eq=False)
class Worker:
    index: int
    process: BaseProcess
    admin_socket: str
    pid: int = 0
    exitcode: int | None = None
    session: aiohttp.ClientSession | None = None
    # What the last admin round trip returned (None: it did not answer).
    health: dict[str, Any] | None = None
    metrics: str | None = None
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def alive(self) -> bool:
        return self.exitcode is None

    async def ask(self, path: str) -> aiohttp.ClientResponse:
        assert self.session is not None
        response = await self.session.get(
            f"http://worker{path}", timeout=aiohttp.ClientTimeout(total=_ASK_TIMEOUT_S)
        )
        response.raise_for_status()
        return response


class Workers:
    """Starts, watches and stops the worker processes; asks them for their admin data."""

    def __init__(self, config: RelayConfig, log_level: str, log_format: str) -> None:
        assert config.workers > 1 and config.reuse_port
        self.config = config
        self._log = (log_level, log_format)
        self.workers: list[Worker] = []
        self._dir = ""
        self.running = False  # every worker started, none asked to stop yet
        self.all_dead = False

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every worker and wait until each serves its admin socket."""
        self._dir = tempfile.mkdtemp(prefix="stun_lb-")
        worker_config = dataclasses.replace(self.config, workers=1, reuse_port=True)
        loop = asyncio.get_running_loop()
        try:
            for index in range(self.config.workers):
                path = os.path.join(self._dir, f"worker-{index}.sock")
                process = _CONTEXT.Process(
                    target=worker_main,
                    args=(worker_config, index, path, os.getpid(), *self._log),
                    name=f"stun_lb-worker-{index}",
                )
                process.start()
                worker = Worker(index, process, path, pid=process.pid or 0)
                worker.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path))
                self.workers.append(worker)
                loop.add_reader(process.sentinel, self._on_exit, worker)
            for worker in self.workers:
                await self._wait_ready(worker)
        except BaseException:
            await self.stop()
            raise
        self.running = True
        log.info(
            "workers started",
            extra={
                "workers": {str(w.index): w.pid for w in self.workers},
                "udp": format_hostport(self.config.listen),
            },
        )

    async def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if not worker.alive:
                raise OSError(
                    f"worker {worker.index} exited while starting "
                    f"(exit code {worker.exitcode}; its log says why)"
                )
            try:
                response = await worker.ask("/healthz")
                worker.health = await response.json()
                return
            except (TimeoutError, aiohttp.ClientError, OSError):
                if time.monotonic() > deadline:
                    raise OSError(f"worker {worker.index} did not start") from None
                await asyncio.sleep(0.05)

    def _on_exit(self, worker: Worker) -> None:
        """A worker's process ended (its sentinel became readable)."""
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        # The sentinel closes a moment before the process can be reaped.
        worker.process.join(1.0)
        worker.exitcode = worker.process.exitcode
        worker.health = worker.metrics = None
        worker.exited.set()
        with contextlib.suppress(OSError):
            os.unlink(worker.admin_socket)  # a killed worker could not
        if not self.running:
            return  # starting (start() reports it) or stopping
        log.error(
            "worker exited: not restarted; its clients are rehashed onto the others",
            extra={"worker": worker.index, "pid": worker.pid, "exitcode": worker.exitcode},
        )
        if not any(w.alive for w in self.workers):
            self.all_dead = True
            log.error("every worker has exited; stopping")
            os.kill(os.getpid(), signal.SIGTERM)  # the same clean path as an operator's stop

    async def stop(self) -> None:
        """SIGTERM every live worker, wait, SIGKILL stragglers; remove the socket directory."""
        self.running = False
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for worker in self.workers:
            process = worker.process
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(worker.exited.wait(), max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker did not stop; killing it", extra={"worker": worker.index})
                process.kill()
            process.join()
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(process.sentinel)
            worker.exitcode = process.exitcode
            process.close()
            if worker.session is not None:
                await worker.session.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        log.info(
            "workers stopped",
            extra={"exitcodes": {str(w.index): w.exitcode for w in self.workers}},
        )

    # --- asking the workers ---------------------------------------------------------

    async def ask_all(self, what: Callable[[Worker], Awaitable[None]]) -> None:
        async def one(worker: Worker) -> None:
            if not worker.alive:
                return
            try:
                await what(worker)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                worker.health = worker.metrics = None  # unresponsive this time

        await asyncio.gather(*(one(worker) for worker in self.workers))

    async def refresh_health(self) -> None:
        async def ask(worker: Worker) -> None:
            worker.health = await (await worker.ask("/healthz")).json()

        await self.ask_all(ask)

    async def refresh_metrics(self) -> None:
        async def ask(worker: Worker) -> None:
            worker.metrics = await (await worker.ask("/metrics")).text()

        await self.ask_all(ask)

    async def flows(self) -> list[dict[str, Any]]:
        rows: dict[int, list[dict[str, Any]]] = {}

        async def ask(worker: Worker) -> None:
            flows = await (await worker.ask("/flows")).json()
            rows[worker.index] = [{"worker": worker.index, **flow} for flow in flows]

        await self.ask_all(ask)
        merged = [row for index in sorted(rows) for row in rows[index]]
        return sorted(merged, key=lambda row: (row["created"], row["worker"], row["id"]))

    def health(self) -> dict[str, Any]:
        """The parent's /healthz body, from the workers' last answers."""
        config = self.config
        workers = []
        for worker in self.workers:
            answer = worker.health or {}
            workers.append(
                {
                    "worker": worker.index,
                    "pid": worker.pid,
                    "alive": worker.alive,
                    "responding": worker.health is not None,
                    "exitcode": worker.exitcode,
                    "flows": answer.get("flows"),
                    "state_up": answer.get("state_up"),
                }
            )
        healthy = all(row["alive"] and row["responding"] for row in workers)
        return {
            # A relay with a dead worker still forwards; "degraded" says capacity is gone.
            "status": "ok" if healthy else "degraded",
            "listen": format_hostport(config.listen),
            "workers": workers,
            "flows": sum(row["flows"] or 0 for row in workers),
            "max_flows": config.max_flows,  # per worker
            "rebind": config.rebind.value,
            "verify_integrity": config.verify_integrity,
            "idle_timeout_s": config.idle_timeout_s,
            "backends": {str(k): v for k, v in sorted(config.backends.items())},
            "reuse_port": True,
            "state": redact_url(config.state_url) if config.state_url else "memory",
            "forward": config.forward.value,
            # Each worker binds it; with port 0 each has its own (see its /healthz).
            "internal": (
                format_hostport(config.internal_address)
                if config.forward is ForwardMode.ENCAP
                else None
            ),
        }


class WorkersCollector(Collector):
    """Every worker's last scraped metrics with a ``worker`` label, and the workers' states."""

    def __init__(self, workers: Workers) -> None:
        self._workers = workers

    def collect(self) -> Iterable[Metric]:
        workers = self._workers.workers
        merged: dict[str, Metric] = {}
        for worker in workers:
            if worker.metrics is None:
                continue
            label = str(worker.index)
            for family in text_string_to_metric_families(worker.metrics):
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                for sample in family.samples:
                    target.add_sample(sample.name, {"worker": label, **sample.labels}, sample.value)
        yield from merged.values()
        states = GaugeMetricFamily(
            "rtclab_lb_workers", "Worker processes, by state (--workers).", labels=["state"]
        )
        alive = sum(1 for worker in workers if worker.alive)
        states.add_metric(["alive"], alive)
        states.add_metric(["dead"], len(workers) - alive)
        yield states
        up = GaugeMetricFamily(
            "rtclab_lb_worker_up",
            "1 while a worker process runs and answered this scrape.",
            labels=["worker"],
        )
        for worker in workers:
            up.add_metric([str(worker.index)], 1 if worker.metrics is not None else 0)
        yield up


# --- the parent's admin app ---------------------------------------------------------

WORKERS = web.AppKey("workers", Workers)


def create_supervisor_app(config: RelayConfig, log_level: str, log_format: str) -> web.Application:
    """The parent's admin app; its cleanup context starts and stops the workers."""
    workers = Workers(config, log_level, log_format)
    registry = CollectorRegistry()
    registry.register(WorkersCollector(workers))
    # Each worker reports its own loop lag, labelled by worker; the parent only waits.
    app = create_base_app(registry, workers.health, watch_loop=False)
    app[WORKERS] = workers
    # /healthz and /metrics render synchronously from what the workers said
    # last: ask them first, on every request.
    app.middlewares.append(_ask_workers_first)
    app.router.add_get("/flows", _flows)
    app.cleanup_ctx.append(_run_workers)
    return app


@web.middleware
async def _ask_workers_first(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    workers = request.app[WORKERS]
    if request.path == "/metrics":
        await workers.refresh_metrics()
    elif request.path == "/healthz":
        await workers.refresh_health()
    return await handler(request)


async def _flows(request: web.Request) -> web.Response:
    return web.json_response(await request.app[WORKERS].flows())


async def _run_workers(app: web.Application) -> AsyncIterator[None]:
    workers = app[WORKERS]
    await workers.start()
    try:
        yield
    finally:
        await workers.stop()
