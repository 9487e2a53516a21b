"""The namespace lab as a scenario environment (runs inside the caller namespace).

``rtclab lab --netns run`` builds the namespaces, then runs the scenario
runner inside the caller namespace with the lab's :class:`Plan` in the
environment (``RTCLAB_NETNS``).  There, :class:`NetnsLab`:

* starts each run's stack in the server namespace (``launcher`` = ``ip netns
  exec SERVER``, ``host`` = the server's address) on ports it hands out
  itself -- the runner's process lives in another namespace, so it cannot
  ask the kernel which ports are free over there;
* when the run wants a controllable path and the kernel has no netem, starts
  a user-space emulator on the router and redirects that run's traffic (by
  its relay and signaling ports) into it, before the stack starts: the
  callers still address the relay, the media servers still advertise it,
  and the emulator's outbound traffic leaves through the masquerade, so the
  relay sees the NAT's public address either way;
* rebinds through the NAT itself (:mod:`lab.netns.nat`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from lab.netem.client import NetemControl
from lab.netem.core import Direction, LinkConfig
from lab.netem.impair import apply, config_json, parse_impair
from lab.netns.emulator import Emulator, close_path, path_state
from lab.netns.nat import NatControl, NatError, sh
from lab.netns.plan import LAN_DEVICE, WAN_DEVICE, Impairment, Plan
from lab.netns.shaping import class_commands, class_netem
from lab.scenarios.model import Run
from lab.stack import DEFAULT_MEDIA_SERVERS, Stack, StackConfig

log = logging.getLogger("rtclab.netns")

PLAN_VARIABLE = "RTCLAB_NETNS"  # the Plan as JSON, set by `rtclab lab --netns` for the runner


class PortBlocks:
    """Consecutive fixed ports, never handed out twice in one lab."""

    def __init__(self, first: int) -> None:
        self._next = first

    def take(self, count: int) -> list[int]:
        ports = list(range(self._next, self._next + count))
        self._next += count
        if self._next > 32767:
            raise RuntimeError("the lab ran out of fixed ports below the ephemeral range")
        return ports


class NetnsLab:
    """A :class:`~lab.scenarios.environment.LabEnvironment` for the namespace lab."""

    name = "netns"
    parallel_runs = True  # each run has its own stack, redirect and HTB class

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.caller_host = plan.caller_address
        self._ports = PortBlocks(plan.first_port)
        self._emulators: dict[int, Emulator] = {}  # by relay port
        self._classes = 1  # HTB minors handed out (1 is the default class)
        self._moved_in_use: set[str] = set()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> NetnsLab:
        text = (os.environ if environ is None else environ).get(PLAN_VARIABLE)
        if not text:
            raise RuntimeError(
                f"{PLAN_VARIABLE} is not set: the namespace lab runs through `rtclab lab --netns`"
            )
        return cls(Plan.from_json(text))

    def skip_reason(self, run: Run) -> str | None:
        return None  # every run fits: each gets its own stack, as on loopback

    def make_stack(self, config: StackConfig) -> Stack:
        return Stack(config)

    def stack_config(self, netem: bool, overrides: Mapping[str, Any], **extra: Any) -> StackConfig:
        fields = dict(overrides)
        media = int(fields.get("media_servers", DEFAULT_MEDIA_SERVERS))
        relay, admin, signaling, internal, *media_ports = self._ports.take(4 + media)
        server = self.plan.namespace("server")
        fields.update(
            host=self.plan.server_address,
            launcher=("ip", "netns", "exec", server),
            relay_port=relay,
            relay_admin_port=admin,
            relay_internal_port=internal,  # used under forward=encap only
            signaling_port=signaling,
            media_ports=tuple(media_ports),
            netem=False,  # the path is the router's, not a process next to the stack
        )
        config = StackConfig(**fields, **extra)
        if netem and self.plan.impairment is Impairment.EMULATOR:
            log_dir = extra.get("log_dir") or Path("/tmp")
            server = self.plan.server_address
            emulator = Emulator(
                namespace=self.plan.namespace("nat"),
                listen_host=self.plan.nat_lan_address,
                relay=(server, relay),
                signaling=(server, signaling),
                ports=self._ports.take(3),
                log_path=Path(log_dir) / "netem.log",
            )
            emulator.start()
            self._emulators[relay] = emulator
        return config

    def path(self, stack: Stack) -> NetnsPath:
        minor = 0
        if self.plan.impairment is Impairment.NETEM:
            self._classes += 1
            minor = self._classes
        return NetnsPath(
            self,
            stack,
            emulator=self._emulators.pop(stack.relay_port, None),
            minor=minor,
        )

    def nat_control(self, relay_port: int) -> NatControl:
        return NatControl(
            self.plan.namespace("nat"),
            server_address=self.plan.server_address,
            relay_port=relay_port,
            wan_device=WAN_DEVICE,
            prefix_len=self.plan.wan_prefix_len,
            pool=self.plan.moved_addresses,
            in_use=self._moved_in_use,
        )

    def close(self) -> None:
        """Stop emulators of runs whose stack never got a path (a failed start)."""
        for emulator in self._emulators.values():
            emulator.stop()
        self._emulators.clear()

    def describe(self) -> str:
        how = {
            Impairment.NETEM: "tc netem on the router",
            Impairment.EMULATOR: "the user-space emulator on the router (this kernel has no netem)",
            Impairment.NONE: "none",
        }[self.plan.impairment]
        return (
            "network namespaces: callers behind a kernel NAT (nftables masquerade, conntrack "
            f"rebinding); impairment: {how}"
        )


class NetnsPath:
    """What a timeline does to the path of one run: the router's NAT and impairments."""

    def __init__(self, lab: NetnsLab, stack: Stack, *, emulator: Emulator | None, minor: int):
        self.lab = lab
        self.stack = stack
        self.emulator = emulator
        self.minor = minor
        self.nat = lab.nat_control(stack.relay_port)
        self.netem = NetemControl(emulator.control_url) if emulator else None
        self.links = {Direction.UP: LinkConfig(), Direction.DOWN: LinkConfig()}
        self._class_ready = False

    @property
    def impair(self) -> Callable[..., Awaitable[dict[str, Any]]]:
        return self._impair

    @property
    def rebind(self) -> Callable[..., Awaitable[list[dict[str, str]]]]:
        return self._rebind

    async def _impair(self, direction: str = "both", **fields: Any) -> dict[str, Any]:
        if self.netem is not None:
            return await self.netem.impair(direction, **fields)
        if self.minor == 0:
            raise NatError("this lab runs without impairment (--impairment none)")
        request = parse_impair({"direction": direction, **fields})
        await self._ensure_class()
        nat = self.lab.plan.namespace("nat")
        # Uplink leaves the router on its WAN link, downlink on its LAN link.
        devices = {Direction.UP: WAN_DEVICE, Direction.DOWN: LAN_DEVICE}
        for which in request.directions:
            self.links[which] = apply(self.links[which], request)
            await sh(class_netem(nat, devices[which], self.minor, self.links[which]))
        return {d.value: config_json(self.links[d]) for d in Direction}

    async def _ensure_class(self) -> None:
        if self._class_ready:
            return
        plan, stack = self.lab.plan, self.stack
        nat = plan.namespace("nat")
        server = f"{plan.server_address}/32"
        ports = (str(stack.relay_port), str(stack.signaling_port))
        up = [["ip", "dst", server, "match", "ip", "dport", port, "0xffff"] for port in ports]
        down = [["ip", "src", server, "match", "ip", "sport", port, "0xffff"] for port in ports]
        for device, matches in ((WAN_DEVICE, up), (LAN_DEVICE, down)):
            for argv in class_commands(nat, device, self.minor, matches):
                await sh(argv)
        self._class_ready = True

    async def _rebind(self, mode: str = "port", caller: str | None = None) -> list[dict[str, str]]:
        # The NAT moves every mapping of this run: a run's callers share one router.
        return await self.nat.rebind(mode)

    async def stun(self) -> dict[str, Any] | None:
        # Only a user-space emulator on the router looks into the packets.
        return None if self.netem is None else await self.netem.stun()

    async def state(self) -> dict[str, Any]:
        return await path_state(
            "netns", self.lab.plan.impairment.value, self.nat, self.netem, self.links
        )

    async def close(self) -> None:
        await close_path(self.nat, self.netem, self.emulator)
