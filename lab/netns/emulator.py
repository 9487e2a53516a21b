"""A run's user-space emulator (lab/netem) with that run's traffic redirected into it.

Where the kernel has no netem, the real-network labs still impair a run's path
with the user-space emulator: it listens beside the callers' route, and
nftables redirects the run's UDP (by the relay's port) and TCP (by signaling's
port) into it -- callers keep addressing the relay, media servers keep
advertising it.  The emulator forwards to the real relay and signaling from
sockets of its own, which leave through the NAT like any caller's.

* the namespace lab runs it on the router (``namespace``), where a prerouting
  rule redirects what arrives from the LAN;
* the compose caller runs it in its own container, where an output rule
  redirects what the callers send -- all but the emulator's own packets, told
  apart by its user id (``user``), so its upstream traffic is not turned back
  into itself.

The redirect maps (``emu_udp``, ``emu_tcp``: relay or signaling port ->
emulator port) are part of the lab's NAT table (lab/netns/plan.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from lab.netem.client import NetemControl
from lab.netem.core import Direction, LinkConfig
from lab.netem.impair import config_json
from lab.netns.host import die_with_parent
from lab.netns.nat import NatControl
from lab.netns.plan import TABLE, in_namespace

EMULATOR_READY_S = 20.0  # a cold `python -m lab.netem` imports aiohttp: a second or two


class Emulator:
    """One emulator process and its two redirect elements, from ``start()`` to ``stop()``."""

    def __init__(
        self,
        *,
        namespace: str | None,
        listen_host: str,
        relay: tuple[str, int],
        signaling: tuple[str, int],
        ports: list[int],
        log_path: Path,
        user: int | None = None,
    ) -> None:
        self.namespace = namespace
        self.listen_host = listen_host
        self.relay = relay
        self.signaling = signaling
        self.udp_port, self.tcp_port, self.control_port = ports
        self.log_path = log_path
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def relay_port(self) -> int:
        return self.relay[1]

    @property
    def control_url(self) -> str:
        return f"http://{self.listen_host}:{self.control_port}"

    def _nft(self, verb: str, table_map: str, element: str) -> list[str]:
        return in_namespace(
            self.namespace, ["nft", verb, "element", "ip", TABLE, table_map, f"{{ {element} }}"]
        )

    def start(self) -> None:
        """Start it and wait until it answers (blocking: runs before any call exists)."""
        host = self.listen_host
        argv = in_namespace(
            self.namespace,
            [
                sys.executable,
                "-m",
                "lab.netem",
                "--udp-listen",
                f"{host}:{self.udp_port}",
                "--udp-upstream",
                f"{self.relay[0]}:{self.relay[1]}",
                "--tcp-listen",
                f"{host}:{self.tcp_port}",
                "--tcp-upstream",
                f"{self.signaling[0]}:{self.signaling[1]}",
                "--control",
                f"{host}:{self.control_port}",
            ],
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent,
            user=self.user,
        )
        deadline = time.monotonic() + EMULATOR_READY_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the path emulator did not start; see {self.log_path}")
            time.sleep(0.1)
        udp = f"{self.relay[1]} : {self.udp_port}"
        subprocess.run(self._nft("add", "emu_udp", udp), check=True)
        tcp = f"{self.signaling[1]} : {self.tcp_port}"
        subprocess.run(self._nft("add", "emu_tcp", tcp), check=True)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.control_url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        for table_map, port in (("emu_udp", self.relay[1]), ("emu_tcp", self.signaling[1])):
            subprocess.run(self._nft("delete", table_map, str(port)), capture_output=True)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


# --- what a real-network lab's path reports and releases, emulator or not ---------------


async def path_state(
    lab: str,
    impairment: str,
    nat: NatControl,
    netem: NetemControl | None,
    links: Mapping[Direction, LinkConfig],
) -> dict[str, Any]:
    """A path's state for the runner: the NAT's mappings, and the emulator's or netem's."""
    state: dict[str, Any] = {
        "lab": lab,
        "impairment": impairment,
        "mappings": [
            {"inside": f"{m.inside[0]}:{m.inside[1]}", "public": f"{m.public[0]}:{m.public[1]}"}
            for m in await nat.mappings()
        ],
    }
    if netem is not None:
        emulated = await netem.state()
        state["overhead"] = emulated.get("overhead")
        state["emulator"] = emulated
    else:
        state["impairments"] = {d.value: config_json(links[d]) for d in Direction}
    return state


async def close_path(
    nat: NatControl, netem: NetemControl | None, emulator: Emulator | None
) -> None:
    """Finish the NAT's records and undo its moves; stop the run's emulator, if any."""
    await nat.close()
    if netem is not None:
        await netem.close()
    if emulator is not None:
        await asyncio.to_thread(emulator.stop)
