"""The compose lab's caller: scenarios against a stack that already runs, elsewhere.

In docker-compose.yml the relay, media servers, signaling and Redis run in
their own containers; the ``caller`` container (``cap_add: NET_ADMIN``) runs
``rtclab scenario run``.  :class:`ComposeLab` is the scenario environment
there:

* the stack is the compose services, found from ``RTCLAB_*`` variables the
  compose file sets; nothing is started (:class:`ServiceStack`).  A run that
  needs a different stack (another ``--rebind`` policy, more media servers,
  extra part arguments) cannot be served and is skipped with the reason --
  restart the services with other settings to run it;
* the path is the caller's own network namespace: ``tc netem`` on its
  interface (downlink through an ifb device), and rebinding through its own
  nftables NAT -- the caller masquerades its traffic to the relay with a fully
  random port and forgets the conntrack mapping (``port``), or adds another
  address to its interface and sends from that (``address``).  The relay sees
  a new source port or address, for real.

Nothing here can run without a Docker engine; docs/labs.md says what was
checked without one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lab.netem.core import Direction, LinkConfig
from lab.netem.impair import apply, config_json, parse_impair
from lab.netns.nat import NatControl, sh
from lab.netns.plan import TABLE, nat_ruleset
from lab.netns.shaping import own_interface_netem, own_interface_setup, own_interface_teardown
from lab.scenarios.model import CallPlan, Run
from lab.stack import Stack, StackConfig, StackError

IFB_DEVICE = "ifb-rtclab"
HEALTH_TIMEOUT_S = 60.0  # compose starts the services in parallel; aiortc imports are slow


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


def source_address_towards(host: str, port: int) -> str:
    """The address this machine sends from to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        return str(sock.getsockname()[0])


class ComposeLab:
    """A :class:`~lab.scenarios.environment.LabEnvironment` for the compose caller."""

    name = "compose"

    def __init__(self, services: ComposeServices, caller_host: str | None = None) -> None:
        self.services = services
        self.caller_host = caller_host or source_address_towards(*services.relay)
        self._moved_in_use: set[str] = set()
        self._nat_ready = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ComposeLab:
        return cls(ComposeServices.from_environment(environ))

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

    def make_stack(self, config: StackConfig) -> Stack:
        return ServiceStack(config, self.services)

    def path(self, stack: Stack) -> OwnPath:
        return OwnPath(self)

    def describe(self) -> str:
        return (
            "docker compose: the stack in its own containers, the caller rebinding through its "
            "own nftables NAT and impaired by tc netem on its interface"
        )

    def close(self) -> None:
        """Nothing to release: the services belong to docker compose, the NAT to the container."""

    async def ensure_nat(self) -> None:
        """Load the caller's own NAT table (once): masquerade towards the relay."""
        if self._nat_ready:
            return
        await sh(["nft", "delete", "table", "ip", TABLE], check=False)
        ruleset = nat_ruleset(self.services.relay[0], self.services.interface, None, router=False)
        await sh(["nft", "-f", "-"], stdin=ruleset)
        self._nat_ready = True

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
    """The caller container's own link: its netem and its NAT."""

    def __init__(self, lab: ComposeLab) -> None:
        self.lab = lab
        self.nat = lab.nat_control()
        self.links = {Direction.UP: LinkConfig(), Direction.DOWN: LinkConfig()}
        self._shaping = False

    @property
    def impair(self) -> Callable[..., Awaitable[dict[str, Any]]]:
        return self._impair

    @property
    def rebind(self) -> Callable[..., Awaitable[list[dict[str, str]]]]:
        return self._rebind

    async def _impair(self, direction: str = "both", **fields: Any) -> dict[str, Any]:
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
        await self.lab.ensure_nat()
        return await self.nat.rebind(mode)

    async def state(self) -> dict[str, Any]:
        return {
            "lab": "compose",
            "impairments": {d.value: config_json(self.links[d]) for d in Direction},
            "mappings": [
                {"inside": f"{m.inside[0]}:{m.inside[1]}", "public": f"{m.public[0]}:{m.public[1]}"}
                for m in await self.nat.mappings()
            ],
        }

    async def close(self) -> None:
        await self.nat.close()
        if self._shaping:
            for argv in own_interface_teardown(self.lab.services.interface, IFB_DEVICE):
                await sh(argv, check=False)
            self._shaping = False
