"""What machine a run was on, and who else was using it (read from /proc and the tools)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any


def machine_facts() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    facts: dict[str, Any] = {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "virtualised": " hypervisor" in cpuinfo,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "uvloop": _package_version("uvloop"),
        "nginx": _command_output(["nginx", "-v"]).removeprefix("nginx version: "),
        "gcc": _command_output(["gcc", "-dumpfullversion"]),
    }
    return facts


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (done.stdout or done.stderr).strip()


def busy_processes(interval_s: float = 1.0, min_percent: float = 5.0) -> list[dict[str, Any]]:
    """Processes on the host using at least ``min_percent`` of a core, sampled over a second.

    The benchmark shares the machine; this says who else was busy.
    """

    def sample() -> dict[int, tuple[str, int]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                rest = stat[stat.rindex(")") + 2 :].split()
                found[int(entry.name)] = (comm, int(rest[11]) + int(rest[12]))
        return found

    first = sample()
    time.sleep(interval_s)
    second = sample()
    ticks = os.sysconf("SC_CLK_TCK") * interval_s
    busy = []
    for pid, (comm, total) in second.items():
        if pid in first and pid != os.getpid():
            percent = 100.0 * (total - first[pid][1]) / ticks
            if percent >= min_percent:
                busy.append({"pid": pid, "comm": comm, "cpu_percent": round(percent)})
    return sorted(busy, key=lambda p: -p["cpu_percent"])
