"""Driving udpblast.c: compile it, prime its flows, run steps, read the kernel's drop counts."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _procs import spawn, stop

from wire import route_token, stun

SOURCE = Path(__file__).resolve().parent / "udpblast.c"


def compile_blaster(workdir: Path) -> Path:
    """Build udpblast with the machine's C compiler; return the binary's path."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("needs a C compiler: apt-get install gcc")
    binary = workdir / "udpblast"
    done = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(binary), str(SOURCE)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr}")
    return binary


def priming_requests(secret: str, sink_port: int, flows: int) -> list[bytes]:
    """One STUN Binding request per flow, each naming its own session on the sink's port.

    What an ICE agent's first connectivity check looks like to the relay: the
    route token in the server ufrag names backend 1 and the sink's port.  Paths
    that do not parse STUN simply forward it, and the sink counts it as the
    flow's arrival.
    """
    key = secret.encode()
    requests = []
    for n in range(flows):
        ufrag = route_token.encode(key, backend_id=1, port=sink_port)
        password = route_token.ice_password(key, ufrag)
        requests.append(stun.binding_request(os.urandom(12), f"{ufrag}:cli{n}", password))
    return requests


class Blaster:
    """One udpblast process: its flows (fixed source ports) and its sink live across steps."""

    def __init__(
        self,
        binary: Path,
        target: tuple[str, int],
        sink_port: int,
        primes: Sequence[bytes],
        *,
        size: int,
        cpu: int,
        workdir: Path,
        sends: str = "gso",
    ) -> None:
        prime_file = workdir / "primes.hex"
        prime_file.write_text("".join(p.hex() + "\n" for p in primes))
        argv = [str(binary), target[0], str(target[1]), str(sink_port), str(len(primes))]
        self._stderr = workdir / "udpblast.stderr"
        with self._stderr.open("wb") as log:
            self._proc = spawn(
                [*argv, str(size), str(prime_file), sends], cpu=cpu, pipes=True, log=log
            )
        self.pid = self._proc.pid
        self._pending = b""
        ready = self._read(timeout_s=10.0)
        if not ready.get("ready"):
            raise RuntimeError(f"udpblast did not start: {ready}")
        # "gso" falls back to sendmmsg on a kernel without UDP_SEGMENT (< 4.18).
        self.sends = "gso" if ready.get("gso") else "sendmmsg"

    def prime(self, timeout_s: float = 5.0) -> dict[str, Any]:
        return self._command(f"prime {timeout_s}", timeout_s + 10.0)

    def set_sends(self, sends: str) -> None:
        answer = self._command(f"sends {sends}", 10.0)
        self.sends = "gso" if answer.get("gso") else "sendmmsg"

    def oneway(self, rate_pps: float, seconds: float) -> dict[str, Any]:
        return self._command(f"oneway {rate_pps:.1f} {seconds}", seconds + 15.0)

    def echo(self, rate_pps: float, seconds: float) -> dict[str, Any]:
        return self._command(f"echo {rate_pps:.1f} {seconds}", seconds + 15.0)

    def close(self) -> None:
        if self._proc.poll() is None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(b"quit\n")
                self._proc.stdin.close()
                self._proc.wait(2.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self._proc)

    def __enter__(self) -> Blaster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _command(self, line: str, timeout_s: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line.encode() + b"\n")
        answer = self._read(timeout_s)
        if "error" in answer:
            raise RuntimeError(f"udpblast refused {line!r}: {answer['error']}")
        return answer

    def _read(self, timeout_s: float) -> dict[str, Any]:
        """One JSON line from udpblast, or an error after ``timeout_s`` (a hang guard)."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                if not selector.select(timeout_s):
                    raise RuntimeError(f"udpblast said nothing for {timeout_s:.0f} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    status = self._proc.wait()
                    said = self._stderr.read_text(errors="replace").strip()
                    raise RuntimeError(f"udpblast exited (status {status}): {said}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        answer = json.loads(line)
        assert isinstance(answer, dict)
        return answer
