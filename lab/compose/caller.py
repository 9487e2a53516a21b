"""The compose lab's caller: scenarios against a stack that already runs, elsewhere.

In docker-compose.yml the relay, media servers, signaling and Redis run in
their own containers; the ``caller`` container (``cap_add: NET_ADMIN``) runs
``rtclab scenario run``.  :class:`ComposeLab` is the scenario environment
there:

* the stack is the compose services, found from ``RTCLAB_*`` variables the
  compose file sets; nothing is started (:class:`ServiceStack`).  A run that
  needs a different stack (another ``--rebind`` policy, more media servers,
  extra part arguments) cannot be served and is skipped with the reason --
  ``scripts/compose`` restarts the relay with each policy a scenario needs
  and runs the scenario once per policy;
* the path is the caller's own network namespace.  Rebinding goes through its
  own nftables NAT: the caller masquerades its traffic to the relay with a
  fully random port and forgets the conntrack mapping (``port``), or adds
  another address to its interface and sends from that (``address``) -- the
  relay sees a new source port or address, for real.  Impairment is ``tc
  netem`` on its interface (downlink through an ifb device) where the kernel
  has netem; else the user-space emulator runs in the container, and the
  caller's traffic to the relay and signaling is redirected into it
  (lab/netns/emulator.py).  The reports say which.

One caller namespace means one path: runs here never share the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lab.netem.client import NetemControl
from lab.netem.core import Direction, LinkConfig
from lab.netem.impair import apply, config_json, parse_impair
from lab.netns.emulator import Emulator, close_path, path_state
from lab.netns.nat import NatControl, NatError, sh
from lab.netns.plan import TABLE, Impairment, conntrack_delete, own_nat_ruleset
from lab.netns.shaping import own_interface_netem, own_interface_setup, own_interface_teardown
from lab.scenarios.model import CallPlan, Run
from lab.stack import Stack, StackConfig, StackError, free_port, source_address_towards

log = logging.getLogger("rtclab.compose")

IFB_DEVICE = "ifb-rtclab"
HEALTH_TIMEOUT_S = 60.0  # compose starts the services in parallel; aiortc imports are slow
# The emulator runs as the image's unprivileged user: the NAT tells its packets apart
# from the callers' by this uid.
EMULATOR_UID = 10001
IMPAIRMENTS = ("auto", "netem", "emulator", "none")


def _address_pool(text: str) -> tuple[str, ...]:
    """``A-B`` ranges and single addresses, comma-separated."""
    found: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        low = ipaddress.ip_address(first.strip())
        high = ipaddress.ip_address(last.strip()) if last else low
        found += [str(ipaddress.ip_address(i)) for i in range(int(low), int(high) + 1)]
    return tuple(found)


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"{url!r} names no port")
    return port


@dataclass(frozen=True, slots=True)
class ComposeServices:
    """Where the compose services are, as the caller container's environment says."""

    signaling_url: str
    relay: tuple[str, int]  # the public UDP address every answer names (an IP: it goes in SDP)
    relay_admin_url: str
    media_urls: tuple[str, ...]
    rebind: str  # the relay's --rebind policy
    state: str  # the relay's --state
    interface: str  # the caller's interface towards the services
    prefix_len: int  # of the compose network, for addresses an ``address`` rebind adds
    moved_addresses: tuple[str, ...]
    impairment: str = "auto"  # auto | netem | emulator | none
    forward: str = "nat"  # the relay's (and media servers') --forward
    media_socket: str = "shared"  # the media servers' --media-socket

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ComposeServices:
        env = os.environ if environ is None else environ
        host, _, port = env.get("RTCLAB_RELAY", "").rpartition(":")
        try:
            ipaddress.ip_address(host)
            relay = (host, int(port))
            media = tuple(u for u in env.get("RTCLAB_MEDIA", "").split(",") if u)
            services = cls(
                signaling_url=env["RTCLAB_SIGNALING_URL"].rstrip("/"),
                relay=relay,
                relay_admin_url=env["RTCLAB_RELAY_ADMIN_URL"].rstrip("/"),
                media_urls=tuple(u.rstrip("/") for u in media),
                rebind=env.get("RTCLAB_REBIND", "off"),
                state=env.get("RTCLAB_STATE", "memory"),
                interface=env.get("RTCLAB_CALLER_INTERFACE", "eth0"),
                prefix_len=int(env.get("RTCLAB_CALLER_PREFIX_LEN", "24")),
                moved_addresses=_address_pool(env.get("RTCLAB_CALLER_MOVE_TO", "")),
                impairment=env.get("RTCLAB_IMPAIRMENT", "auto") or "auto",
                forward=env.get("RTCLAB_FORWARD", "nat"),
                media_socket=env.get("RTCLAB_MEDIA_SOCKET", "shared"),
            )
        except (KeyError, ValueError) as exc:
            raise RuntimeError(
                "the compose lab needs RTCLAB_SIGNALING_URL, RTCLAB_RELAY (IP:PORT), "
                f"RTCLAB_RELAY_ADMIN_URL and RTCLAB_MEDIA (docker-compose.yml sets them): {exc}"
            ) from exc
        if not services.media_urls:
            raise RuntimeError("RTCLAB_MEDIA names no media server")
        if services.impairment not in IMPAIRMENTS:
            raise RuntimeError(f"RTCLAB_IMPAIRMENT must be one of {', '.join(IMPAIRMENTS)}")
        return services


class ServiceStack(Stack):
    """The compose services seen through the Stack interface; it starts and stops nothing."""

    def __init__(self, config: StackConfig, services: ComposeServices) -> None:
        self.services = services
        super().__init__(config)
        self.children = {}  # parts run in their own containers, not as our children

    @property
    def signaling_url(self) -> str:
        return self.services.signaling_url

    @property
    def relay_admin_url(self) -> str:
        return self.services.relay_admin_url

    def relay_admin_urls(self) -> dict[str, str]:
        return {"relay": self.services.relay_admin_url}

    def media_url(self, index: int) -> str:
        return self.services.media_urls[index]

    @property
    def redis_url(self) -> str | None:
        state = self.services.state
        return state if state.startswith("redis://") else None

    async def start(self) -> None:
        """Wait until every service answers /healthz (signaling: with every media server)."""
        urls = [
            f"{self.relay_admin_url}/healthz",
            *(f"{url}/healthz" for url in self.services.media_urls),
        ]
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for url in [*urls, f"{self.signaling_url}/healthz"]:
                while not await self._answers(http, url):
                    if time.monotonic() > deadline:
                        raise StackError(f"{url} did not answer; is `docker compose up` running?")
                    await asyncio.sleep(0.5)

    async def _answers(self, http: aiohttp.ClientSession, url: str) -> bool:
        try:
            async with http.get(url) as response:
                body = await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        if body is None:
            return False
        if url.startswith(self.signaling_url):
            wanted = len(self.services.media_urls)
            return int(body.get("backends_healthy", wanted)) >= wanted
        return True

    async def stop(self) -> dict[str, int | None]:
        return {}

    async def kill(self, name: str, sig: int = 9) -> None:
        raise StackError(f"{name} runs in its own container: `docker compose kill {name}`")

    async def restart(self, name: str) -> None:
        raise StackError(f"{name} runs in its own container: `docker compose restart {name}`")


def kernel_has_netem() -> tuple[bool, str | None]:
    """Try a netem qdisc on this namespace's loopback (and remove it): (works, why not)."""
    add = ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"]
    done = subprocess.run(add, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return False, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)
    return True, None


def choose_impairment(requested: str) -> tuple[Impairment, str]:
    """The impairment this caller uses, and a line saying why (for the reports)."""
    if requested == "none":
        return Impairment.NONE, "none (RTCLAB_IMPAIRMENT=none)"
    if requested == "emulator":
        return Impairment.EMULATOR, "the user-space emulator in the caller container (as asked)"
    netem, why_not = kernel_has_netem()
    if netem:
        return Impairment.NETEM, "tc netem on the caller's interface"
    if requested == "netem":
        raise StackError(f"RTCLAB_IMPAIRMENT=netem, but this kernel has no netem ({why_not})")
    return (
        Impairment.EMULATOR,
        f"the user-space emulator in the caller container (this kernel has no netem: {why_not})",
    )


class ComposeLab:
    """A :class:`~lab.scenarios.environment.LabEnvironment` for the compose caller."""

    name = "compose"
    parallel_runs = False  # one caller namespace, one NAT, one path

    def __init__(
        self,
        services: ComposeServices,
        caller_host: str | None = None,
        impairment: tuple[Impairment, str] | None = None,
    ) -> None:
        self.services = services
        self.caller_host = caller_host or source_address_towards(*services.relay)
        self._impairment = impairment
        self._moved_in_use: set[str] = set()
        self._nat_ready = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ComposeLab:
        return cls(ComposeServices.from_environment(environ))

    @property
    def impairment(self) -> Impairment:
        return self._chosen()[0]

    def _chosen(self) -> tuple[Impairment, str]:
        if self._impairment is None:
            self._impairment = choose_impairment(self.services.impairment)
        return self._impairment

    def skip_reason(self, run: Run) -> str | None:
        """Why the running services cannot serve ``run`` (None: they can)."""
        wanted = dict(run.stack)
        have = self.services
        if wanted.get("rebind", "off") != have.rebind:
            return (
                f"needs the relay with --rebind {wanted.get('rebind', 'off')}; it runs "
                f"{have.rebind} (RTCLAB_REBIND={wanted.get('rebind', 'off')} docker compose up -d)"
            )
        forward = wanted.get("forward", "nat")
        if forward != have.forward:
            return (
                f"needs the relay with --forward {forward}; it runs {have.forward} "
                f"(RTCLAB_FORWARD={forward} docker compose up -d)"
            )
        if wanted.get("media_socket", "shared") != have.media_socket:
            return (
                f"needs media servers with --media-socket {wanted.get('media_socket', 'shared')};"
                f" they run {have.media_socket}"
            )
        if wanted.get("topology", "relay") != "relay":
            return "needs the direct topology; the compose lab has a relay"
        if int(wanted.get("relays", 1)) != 1:
            return "needs several relay instances; the compose lab runs one"
        if int(wanted.get("media_servers", len(have.media_urls))) > len(have.media_urls):
            count = len(have.media_urls)
            return f"needs {wanted['media_servers']} media servers; compose runs {count}"
        wanted_state = wanted.get("state", "memory")
        if (wanted_state == "redis") != have.state.startswith("redis://"):
            return f"needs relay state {wanted_state}; the relay runs --state {have.state}"
        extra = [key for key in ("relay_args", "media_args", "signaling_args") if wanted.get(key)]
        if extra:
            return f"needs part arguments ({', '.join(extra)}) the compose file does not set"
        if run.client != "aiortc":
            return f"needs the {run.client} client; the caller image carries the lab's own only"
        return None

    def stack_config(self, netem: bool, overrides: Mapping[str, Any], **extra: Any) -> StackConfig:
        reason = self.skip_reason(Run(label="-", calls=CallPlan(0, 0.0), stack=dict(overrides)))
        if reason:
            raise StackError(f"the compose services cannot serve this run: {reason}")
        have = self.services
        return StackConfig(
            media_servers=len(have.media_urls),
            rebind=have.rebind,
            forward=have.forward,
            media_socket=have.media_socket,
            host=have.relay[0],
            relay_port=have.relay[1],
            relay_admin_port=_port(have.relay_admin_url),
            signaling_port=_port(have.signaling_url),
            media_ports=tuple(_port(url) for url in have.media_urls),
            **extra,
        )

    def _start_emulator(self, log_path: Path) -> Emulator:
        emulator = Emulator(
            namespace=None,
            listen_host="127.0.0.1",  # where an output redirect delivers
            relay=self.services.relay,
            signaling=(self.signaling_address(), _port(self.services.signaling_url)),
            ports=[free_port(socket.SOCK_DGRAM), free_port(), free_port()],
            log_path=log_path,
            user=EMULATOR_UID,
        )
        emulator.start()
        return emulator

    def signaling_address(self) -> str:
        host = urlsplit(self.services.signaling_url).hostname or ""
        return socket.gethostbyname(host)

    def make_stack(self, config: StackConfig) -> Stack:
        return ServiceStack(config, self.services)

    def path(self, stack: Stack) -> OwnPath:
        """The run's path, set up before its calls start: the NAT, and the emulator if used."""
        self.ensure_nat()
        # Runs follow one another here, all towards the same relay port: what an earlier
        # run's sockets left in conntrack is not this run's to move (nor to report).
        relay_host, relay_port = self.services.relay
        subprocess.run(conntrack_delete(relay_host, relay_port), capture_output=True, check=False)
        emulator = None
        if self.impairment is Impairment.EMULATOR:
            emulator = self._start_emulator(stack.log_dir / "netem.log")
        return OwnPath(self, emulator)

    def describe(self) -> str:
        return (
            "docker compose: the stack in its own containers, the caller rebinding through its "
            f"own nftables NAT; impairment: {self._chosen()[1]}"
        )

    def ensure_nat(self) -> None:
        """Load the caller's own NAT table (once): masquerade and redirects, before calls."""
        if self._nat_ready:
            return
        subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, check=False)
        ruleset = own_nat_ruleset(
            self.services.relay[0], self.signaling_address(), self.services.interface, EMULATOR_UID
        )
        done = subprocess.run(
            ["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise StackError(f"the caller's NAT did not load: {done.stderr.strip()[:300]}")
        self._nat_ready = True

    def close(self) -> None:
        """Remove the NAT (each run's path stopped its own emulator)."""
        if self._nat_ready:
            subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)
            self._nat_ready = False

    def nat_control(self) -> NatControl:
        have = self.services
        return NatControl(
            None,
            server_address=have.relay[0],
            relay_port=have.relay[1],
            wan_device=have.interface,
            prefix_len=have.prefix_len,
            pool=have.moved_addresses,
            in_use=self._moved_in_use,
        )


class OwnPath:
    """The caller container's own link: its NAT, and netem or the emulator."""

    def __init__(self, lab: ComposeLab, emulator: Emulator | None) -> None:
        self.lab = lab
        self.nat = lab.nat_control()
        self.emulator = emulator
        self.netem = NetemControl(emulator.control_url) if emulator else None
        self.links = {Direction.UP: LinkConfig(), Direction.DOWN: LinkConfig()}
        self._shaping = False

    @property
    def impair(self) -> Callable[..., Awaitable[dict[str, Any]]]:
        return self._impair

    @property
    def rebind(self) -> Callable[..., Awaitable[list[dict[str, str]]]]:
        return self._rebind

    async def _impair(self, direction: str = "both", **fields: Any) -> dict[str, Any]:
        if self.netem is not None:
            return await self.netem.impair(direction, **fields)
        if self.lab.impairment is not Impairment.NETEM:
            raise NatError("this caller runs without impairment (RTCLAB_IMPAIRMENT=none)")
        request = parse_impair({"direction": direction, **fields})
        device = self.lab.services.interface
        if not self._shaping:
            for argv in own_interface_setup(device, IFB_DEVICE):
                await sh(argv)
            self._shaping = True
        targets = {Direction.UP: device, Direction.DOWN: IFB_DEVICE}
        for which in request.directions:
            self.links[which] = apply(self.links[which], request)
            await sh(own_interface_netem(targets[which], self.links[which]))
        return {d.value: config_json(self.links[d]) for d in Direction}

    async def _rebind(self, mode: str = "port", caller: str | None = None) -> list[dict[str, str]]:
        # All calls of the caller container share its NAT: one rebind moves them all.
        return await self.nat.rebind(mode)

    async def stun(self) -> dict[str, Any] | None:
        return None  # the kernel's NAT and tc shape the path; nothing reads the packets

    async def state(self) -> dict[str, Any]:
        return await path_state(
            "compose", self.lab.impairment.value, self.nat, self.netem, self.links
        )

    async def close(self) -> None:
        await close_path(self.nat, self.netem, self.emulator)
        if self._shaping:
            for argv in own_interface_teardown(self.lab.services.interface, IFB_DEVICE):
                await sh(argv, check=False)
            self._shaping = False
