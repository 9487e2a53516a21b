"""Inside one ``--workers`` process: the relay on the shared port, its admin on a Unix socket.

The parent (:mod:`stun_lb.io.workers`) spawns this with ``spawn``, so the
worker imports the relay afresh and inherits nothing of the parent's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

from aiohttp import web

from stun_lb.core.config import LoopKind, RelayConfig
from wire.logs import configure as configure_logging
from wire.service import run as run_loop

log = logging.getLogger("stun_lb")

_PR_SET_PDEATHSIG = 1


def worker_main(
    config: RelayConfig,
    index: int,
    admin_socket: str,
    parent_pid: int,
    log_level: str,
    log_format: str,
) -> None:
    """A worker process: the relay on the shared port, its admin app on ``admin_socket``."""
    _die_with_parent(parent_pid)
    configure_logging(log_level, log_format)
    tag = _WorkerTag(index)
    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
    try:
        run_loop(_serve_worker(config, admin_socket), use_uvloop=config.loop is LoopKind.UVLOOP)
    except OSError as exc:
        log.error("cannot start the relay", extra={"error": str(exc)})
        sys.exit(1)


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGTERM this process when its parent exits, however it exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        sys.exit(0)  # the parent died before the request took effect


class _WorkerTag(logging.Filter):
    """Adds ``worker`` to every log record of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


async def _serve_worker(config: RelayConfig, admin_socket: str) -> None:
    from stun_lb.io.admin import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Before anything else: a SIGTERM while starting still shuts down cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(config), access_log=None)
    try:
        await runner.setup()  # starts the relay (the app's cleanup context)
        if not stop.is_set():
            await web.UnixSite(runner, admin_socket).start()
            log.info("worker ready", extra={"pid": os.getpid()})
            await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A second signal (the parent's, after an operator's to the whole
            # group) must not kill the process on its way out with -SIGTERM.
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        _remove_admin_socket(admin_socket)
        log.info("stopped")


def _remove_admin_socket(admin_socket: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(admin_socket)
    # The last worker out removes the directory: nobody else will if the
    # parent was killed (which removes the sockets of workers that died).
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(admin_socket))
