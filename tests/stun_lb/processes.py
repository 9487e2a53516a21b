"""``python -m stun_lb`` as real subprocesses, and blocking UDP sockets to talk to them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.stun_lb.harness import Metrics, parse_metrics
from tests.stun_lb.packets import SECRET
from wire.addr import Address

# Only guards against hanging: a relay starts in well under a second.
HANG_GUARD_S = 15.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(HANG_GUARD_S)
    return sock


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


class RelayProcess:
    """One relay (or relay parent, with --workers) on ``udp_port``, its own admin port."""

    def __init__(self, udp_port: int, *args: str, log_dir: Path) -> None:
        self.udp_port = udp_port
        self.admin_port = free_port()
        self.log_path = log_dir / f"relay-{self.admin_port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stun_lb",
                "--listen",
                f"127.0.0.1:{udp_port}",
                "--admin",
                f"127.0.0.1:{self.admin_port}",
                "--backend",
                "1=127.0.0.1",
                "--secret",
                SECRET.decode(),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.wait_healthy()

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.udp_port)

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as response:
            body = response.read()
        return body.decode() if path == "/metrics" else json.loads(body)

    def wait_healthy(self) -> dict[str, Any]:
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"relay exited early:\n{self.log()}")
            try:
                health: dict[str, Any] = self.get("/healthz")
                return health
            except OSError:
                assert time.monotonic() < deadline, f"relay never healthy:\n{self.log()}"
                time.sleep(0.05)

    def metrics(self) -> Metrics:
        return parse_metrics(self.get("/metrics"))

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics()[(name, frozenset(labels.items()))]

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=HANG_GUARD_S)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (if still running): no cleanup of any kind in the relay."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=HANG_GUARD_S)
        self._log.close()
