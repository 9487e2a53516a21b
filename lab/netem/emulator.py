"""The emulator as one object: the path model, the UDP and TCP hops, the overhead meter.

The control API and the command line drive it; tests may drive it directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.netem.core import Direction, LinkConfig, PathModel
from lab.netem.impair import ImpairRequest, apply, config_json
from lab.netem.overhead import OverheadMeter
from lab.netem.pool import DEFAULT_POOL, AddressPool
from lab.netem.scheduler import DeliveryScheduler
from lab.netem.tcp import TcpHop
from lab.netem.udp import Rebinding, RebindMode, UdpHop
from wire.addr import Address, format_hostport

log = logging.getLogger("rtclab.netem")


@dataclass(frozen=True, slots=True)
class NetemConfig:
    udp_listen: Address = ("127.0.0.1", 3479)  # next to the relay's 3478
    udp_upstream: Address = ("127.0.0.1", 3478)  # the relay's default public port
    tcp_listen: Address | None = None  # None: no TCP hop
    tcp_upstream: Address = ("127.0.0.1", 8080)  # signaling's default port
    seed: int = 1  # fixed by default, so two runs of a scenario meet the same losses
    up: LinkConfig = field(default_factory=LinkConfig)
    down: LinkConfig = field(default_factory=LinkConfig)
    rebind_pool: str = DEFAULT_POOL
    # Far above the relay's 30 s flow expiry and ICE's 5 s consent checks, so the
    # emulator is never the reason a call's mapping disappears.
    mapping_idle_s: float = 120.0
    max_mappings: int = 4096  # one socket each; bounded so a flood cannot exhaust fds


class Emulator:
    def __init__(
        self,
        config: NetemConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._cpu_clock = cpu_clock
        self.model = PathModel(config.seed, config.up, config.down)
        self.pool = AddressPool.parse(config.rebind_pool)
        self.meter = OverheadMeter(clock, cpu_clock)
        self.scheduler: DeliveryScheduler | None = None
        self.udp: UdpHop | None = None
        self.tcp: TcpHop | None = None

    async def start(self) -> None:
        config = self.config
        self.meter = OverheadMeter(self._clock, self._cpu_clock)
        self.scheduler = DeliveryScheduler(
            asyncio.get_running_loop(), self._clock, self.meter.lateness["udp"].record
        )
        udp = UdpHop(
            self.model,
            config.udp_upstream,
            self.pool,
            self.scheduler,
            mapping_idle_s=config.mapping_idle_s,
            max_mappings=config.max_mappings,
            clock=self._clock,
        )
        udp.start(config.udp_listen)
        self.udp = udp
        if config.tcp_listen is not None:
            tcp = TcpHop(
                self.model,
                config.tcp_upstream,
                self.meter.lateness["tcp"].record,
                clock=self._clock,
            )
            try:
                await tcp.start(config.tcp_listen)
            except OSError:
                udp.close()
                raise
            self.tcp = tcp
        tcp_route = None
        if self.tcp is not None:
            tcp_route = (
                f"{format_hostport(self.tcp_address)} -> {format_hostport(config.tcp_upstream)}"
            )
        log.info(
            "netem ready",
            extra={
                "udp": f"{format_hostport(self.udp_address)} -> {format_hostport(udp.upstream)}",
                "tcp": tcp_route,
                "seed": config.seed,
                "rebind_pool": self.pool.describe(),
                **{d.value: config_json(self.model.config(d)) for d in Direction},
            },
        )

    async def close(self) -> None:
        if self.tcp is not None:
            await self.tcp.close()
        if self.udp is not None:
            self.udp.close()
        if self.scheduler is not None:
            self.scheduler.close()
        log.info("netem stopped", extra={"overhead": self.overhead()})

    @property
    def udp_address(self) -> Address:
        assert self.udp is not None and self.udp.listen_address is not None, "not started"
        return self.udp.listen_address

    @property
    def tcp_address(self) -> Address:
        assert self.tcp is not None and self.tcp.listen_address is not None, "no TCP hop"
        return self.tcp.listen_address

    # --- control ----------------------------------------------------------------

    def impair(self, request: ImpairRequest) -> dict[str, Any]:
        for direction in request.directions:
            old = self.model.config(direction)
            new = apply(old, request)
            self.model.configure(direction, new)
            if new != old:
                log.info(
                    "impairments changed",
                    extra={"direction": direction.value, "impairments": config_json(new)},
                )
        return self.impairments()

    def impairments(self) -> dict[str, Any]:
        return {d.value: config_json(self.model.config(d)) for d in Direction}

    def rebind(self, mode: RebindMode, caller: Address | None) -> list[Rebinding]:
        assert self.udp is not None, "not started"
        return self.udp.rebind(mode, caller)

    # --- reporting --------------------------------------------------------------

    def packets_handled(self) -> int:
        """Datagrams and TCP chunks offered to the path, delivered or not."""
        return sum(
            counters.offered
            for direction in Direction
            for counters in self.model.counters(direction).values()
        )

    def overhead(self) -> dict[str, Any]:
        return self.meter.summary(self.packets_handled())

    def state(self) -> dict[str, Any]:
        return {
            "seed": self.model.seed,
            "impairments": self.impairments(),
            "udp": None if self.udp is None else self.udp.snapshot(),
            "tcp": None if self.tcp is None else self.tcp.snapshot(),
            "rebind_pool": self.pool.describe(),
            "counters": {
                direction.value: {
                    kind: counters.as_dict()
                    for kind, counters in self.model.counters(direction).items()
                }
                for direction in Direction
            },
            "pending_deliveries": 0 if self.scheduler is None else len(self.scheduler),
            "overhead": self.overhead(),
        }
