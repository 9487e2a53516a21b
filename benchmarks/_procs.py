"""Processes and ports for the benchmark: pinned, stoppable, measurable.

Every process is pinned to one core (the sched_setaffinity that taskset does),
started in its own session so the terminal's Ctrl-C reaches only the benchmark
(which then stops it in order), and asked to die with the benchmark
(PR_SET_PDEATHSIG) should the benchmark itself be killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_REPO = Path(__file__).resolve().parent.parent


def spawn(
    argv: Sequence[str],
    *,
    cpu: int,
    log: IO[bytes] | None = None,
    env: dict[str, str] | None = None,
    pipes: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` pinned to ``cpu`` (the sched_setaffinity that taskset does)."""

    def prepare() -> None:
        os.sched_setaffinity(0, {cpu})
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
        stdout=subprocess.PIPE if pipes else (log or subprocess.DEVNULL),
        stderr=log or subprocess.DEVNULL,
        env=env,
        cwd=_REPO,
        preexec_fn=prepare,
        start_new_session=True,
        bufsize=0,
    )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL the process group it leads (nginx's workers too)."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    # Its session is its own (start_new_session), so its group holds only what it forked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    return sum(cpu_seconds_by_pid(pids).values())


def cpu_seconds_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU time of each process (all its threads), in seconds; 0 once gone."""
    found = {}
    for pid in pids:
        ticks = 0
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            # Fields after the command name, which may itself hold spaces or ')'.
            rest = stat[stat.rindex(")") + 2 :].split()
            ticks = int(rest[11]) + int(rest[12])  # utime, stime
        found[pid] = ticks / os.sysconf("SC_CLK_TCK")
    return found


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ...: every process a started process has forked."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for child in children(pid):
            found += [child, *descendants(child)]
    return found


def pin(pid: int, cpu: int) -> None:
    """Move a running process, every thread of it, to one core."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), {cpu})


_next_port = 0


def free_port(kind: int) -> int:
    """A port for a listener, never one the kernel may hand out for an unbound socket.

    Ports from the ephemeral range (what binding port 0 returns) can be taken
    by any socket that sends or connects unbound — the generator's flows, the
    forwarders' upstream sockets — between the moment the port is chosen and
    the moment its owner binds it.  So ports are counted up from below that
    range, and none is handed out twice in one run.
    """
    global _next_port
    if not _next_port:
        low, high = _ephemeral_range()
        _next_port = 20000 if not low <= 20000 <= high else high + 1
    while _next_port < 65536:
        port, _next_port = _next_port, _next_port + 1
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left below 65536")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15.0  # a hang guard, far above a normal start
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready in 15 s")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
