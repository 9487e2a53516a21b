"""A real ``redis-server`` on a free loopback port, in a temporary directory, for the tests.

Skips the test (with the reason) only when the binary is not installed:
Debian's ``redis-server`` package provides it, and CI installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# Only a guard against hanging: Redis starts in milliseconds.
START_GUARD_S = 10.0


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``kill()`` and ``start()`` again on the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_tcp_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_GUARD_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: an outage, as abrupt as a crash (nothing is saved: --save "")."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: Redis accepts connections (the kernel does) but answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=START_GUARD_S)

    def keys_read(self) -> int:
        """How many keys the server has looked up for reading (hits + misses, INFO stats)."""
        with self.client() as client:
            stats = client.info("stats")
        return int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])

    def calls(self, command: str) -> int:
        """How many times the server has executed ``command`` (INFO commandstats)."""
        with self.client() as client:
            stats = client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or next(
        (
            path
            for path in ("/usr/sbin/redis-server", "/usr/bin/redis-server")
            if os.access(path, os.X_OK)
        ),
        None,
    )
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; CI installs it)")
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.process.pid, signal.SIGCONT)
        server.kill()
