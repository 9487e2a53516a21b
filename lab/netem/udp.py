"""The UDP hop: callers -> this public socket -> the upstream (the relay), and back.

It behaves like a NAT in front of every caller: each caller address gets a
mapping with its own outbound socket, connected to the upstream, so the
upstream sees one source address per caller and only the upstream's replies
are accepted on it (endpoint-dependent filtering).  Replies leave the public
socket towards the caller.  A rebind replaces a mapping's outbound socket;
the old one is closed, so whatever the upstream still sends to the old address
is lost, as it is for a client that moved.

Sockets are plain non-blocking sockets watched with ``loop.add_reader``, opened
synchronously: a mapping exists the moment its first datagram arrives, and a
rebind swaps sockets in one step, with no half-open state in which packets
would have to wait for a socket being created.  Every packet goes through the
mapping's :class:`~lab.netem.core.Flow` and then the delivery scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lab.netem.core import Deliver, Flow, PathModel
from lab.netem.pool import AddressPool
from lab.netem.scheduler import DeliveryScheduler
from lab.netem.stunwatch import StunWatch
from wire.addr import Address, canonical, format_hostport

log = logging.getLogger("rtclab.netem")

_READ_BATCH = 64  # datagrams per readiness event before yielding to the loop
_RECEIVE_BUFFER_BYTES = 1 << 20  # absorb a burst while the loop is busy (kernel may cap it)


class RebindMode(StrEnum):
    PORT = "port"  # same source address, new port: a NAT rebinding
    ADDRESS = "address"  # new source address from the pool: a client changing networks


@dataclass(frozen=True, slots=True)
class Rebinding:
    caller: Address
    old: Address
    new: Address


class UnknownCaller(LookupError):
    pass


@dataclass(eq=False)
class Mapping:
    caller: Address
    flow: Flow
    sock: socket.socket
    outbound: Address
    created_at: float
    last_seen: float
    packets_up: int = 0
    packets_down: int = 0
    rebinds: int = 0
    closed: bool = False


@dataclass
class UdpCounters:
    mappings_opened: int = 0
    mappings_expired: int = 0
    mapping_limit_drops: int = 0  # new callers refused: too many mappings
    stale_drops: int = 0  # due to leave through a mapping that has since expired
    send_errors: int = 0
    receive_errors: int = 0
    rebinds: dict[RebindMode, int] = field(default_factory=lambda: dict.fromkeys(RebindMode, 0))


def resolve(addr: Address) -> tuple[socket.AddressFamily, Address]:
    """The address family and numeric address of ``host:port``."""
    infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {format_hostport(addr)}")
    family, _, _, _, sockaddr = infos[0]
    return family, canonical(sockaddr)


class UdpHop:
    def __init__(
        self,
        model: PathModel,
        upstream: Address,
        pool: AddressPool,
        scheduler: DeliveryScheduler,
        *,
        mapping_idle_s: float = 120.0,
        max_mappings: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._model = model
        self._family, self.upstream = resolve(upstream)
        self._pool = pool
        self._scheduler = scheduler
        self._mapping_idle_s = mapping_idle_s
        self._max_mappings = max_mappings
        self._clock = clock
        self._wall_clock = wall_clock
        # Every caller's STUN, as it passes (a few messages a second at most).
        self.stun = StunWatch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._public: socket.socket | None = None
        self._public_family = socket.AF_INET
        self._buffer = bytearray(65536)
        self._view = memoryview(self._buffer)
        self._sweeper: asyncio.TimerHandle | None = None
        self.mappings: dict[Address, Mapping] = {}
        self.counters = UdpCounters()
        self.listen_address: Address | None = None

    # --- lifecycle ------------------------------------------------------------

    def start(self, listen: Address) -> Address:
        """Bind the public socket and start forwarding; returns the bound address."""
        self._loop = asyncio.get_running_loop()
        family, numeric = resolve(listen)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_receive_buffer(sock)
            sock.bind(numeric)
        except OSError:
            sock.close()
            raise
        self._public = sock
        self._public_family = family
        self.listen_address = canonical(sock.getsockname())
        self._loop.add_reader(sock.fileno(), self._on_public_readable)
        self._arm_sweeper()
        return self.listen_address

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for mapping in list(self.mappings.values()):
            self._close_mapping(mapping)
        if self._public is not None and self._loop is not None:
            self._loop.remove_reader(self._public.fileno())
            self._public.close()
            self._public = None

    # --- packets --------------------------------------------------------------

    def _on_public_readable(self) -> None:
        public = self._public
        if public is None:
            return
        for _ in range(_READ_BATCH):
            try:
                size, source = public.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.receive_errors += 1
                return
            now = self._clock()
            # An IPv4 socket already gives (dotted quad, port); only IPv6 needs the work.
            caller = source if self._public_family == socket.AF_INET else canonical(source)
            mapping = self.mappings.get(caller) or self._open_mapping(caller, now)
            if mapping is None:
                continue
            mapping.last_seen = now
            if size and self._buffer[0] <= 3:  # STUN (RFC 7983): record it as it arrives
                self.stun.observe(
                    self._wall_clock(),
                    "up",
                    mapping.caller,
                    mapping.outbound,
                    bytes(self._view[:size]),
                )
            verdict = mapping.flow.up.offer(size, now)
            if isinstance(verdict, Deliver):
                mapping.packets_up += 1
                data = bytes(self._view[:size])
                self._scheduler.schedule(verdict.at, self._send_up, mapping, data)

    def _on_upstream_readable(self, mapping: Mapping, sock: socket.socket) -> None:
        for _ in range(_READ_BATCH):
            try:
                size = sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # e.g. ECONNREFUSED: an earlier send met a closed upstream port.
                self.counters.receive_errors += 1
                continue
            now = self._clock()
            mapping.last_seen = now
            if size and self._buffer[0] <= 3:
                self.stun.observe(
                    self._wall_clock(),
                    "down",
                    mapping.caller,
                    mapping.outbound,
                    bytes(self._view[:size]),
                )
            verdict = mapping.flow.down.offer(size, now)
            if isinstance(verdict, Deliver):
                mapping.packets_down += 1
                data = bytes(self._view[:size])
                self._scheduler.schedule(verdict.at, self._send_down, mapping.caller, data)

    def _send_up(self, mapping: Mapping, data: bytes) -> None:
        # Through the mapping's socket *now*: after a rebind, packets still in
        # flight leave from the new address, as they would through a NAT.
        if mapping.closed:
            self.counters.stale_drops += 1
            return
        try:
            mapping.sock.send(data)
        except OSError:
            self.counters.send_errors += 1

    def _send_down(self, caller: Address, data: bytes) -> None:
        if self._public is None:
            return
        try:
            self._public.sendto(data, caller)
        except OSError:
            self.counters.send_errors += 1

    # --- mappings ---------------------------------------------------------------

    def _open_outbound(self, bind_host: str | None) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _grow_receive_buffer(sock)
            if bind_host is not None:
                sock.bind((bind_host, 0))
            sock.connect(self.upstream)
        except OSError:
            sock.close()
            raise
        return sock

    def _watch(self, mapping: Mapping) -> None:
        assert self._loop is not None
        self._loop.add_reader(
            mapping.sock.fileno(), self._on_upstream_readable, mapping, mapping.sock
        )

    def _unwatch_and_close(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        sock.close()

    def _open_mapping(self, caller: Address, now: float) -> Mapping | None:
        if len(self.mappings) >= self._max_mappings:
            self.counters.mapping_limit_drops += 1
            return None
        try:
            sock = self._open_outbound(None)
        except OSError:
            self.counters.send_errors += 1
            log.warning("cannot open an outbound socket", exc_info=True)
            return None
        mapping = Mapping(
            caller=caller,
            flow=self._model.open_flow("udp"),
            sock=sock,
            outbound=canonical(sock.getsockname()),
            created_at=now,
            last_seen=now,
        )
        self.mappings[caller] = mapping
        self._watch(mapping)
        self.counters.mappings_opened += 1
        log.info(
            "mapping opened",
            extra={
                "caller": format_hostport(caller),
                "outbound": format_hostport(mapping.outbound),
            },
        )
        return mapping

    def _close_mapping(self, mapping: Mapping) -> None:
        mapping.closed = True
        self.mappings.pop(mapping.caller, None)
        self._unwatch_and_close(mapping.sock)

    def _arm_sweeper(self) -> None:
        assert self._loop is not None
        # Often enough that a mapping outlives its idle limit by at most a quarter.
        period_s = max(0.05, min(self._mapping_idle_s / 4, 5.0))
        self._sweeper = self._loop.call_later(period_s, self._sweep)

    def _sweep(self) -> None:
        now = self._clock()
        for mapping in list(self.mappings.values()):
            if now - mapping.last_seen > self._mapping_idle_s:
                self._close_mapping(mapping)
                self.counters.mappings_expired += 1
                log.info("mapping expired", extra={"caller": format_hostport(mapping.caller)})
        self._arm_sweeper()

    def rebind(self, mode: RebindMode, caller: Address | None = None) -> list[Rebinding]:
        """Give one mapping (or all) a new outbound socket; the old one is closed.

        Raises UnknownCaller for a caller without a mapping, ValueError when the
        pool has no other address, OSError when the new socket cannot be opened
        (mappings already moved stay moved).
        """
        if caller is not None:
            caller = canonical(caller)
            if caller not in self.mappings:
                raise UnknownCaller(f"no mapping for caller {format_hostport(caller)}")
            targets = [self.mappings[caller]]
        else:
            targets = list(self.mappings.values())
        moved = []
        for mapping in targets:
            old = mapping.outbound
            # Port mode: same address, and the kernel picks a port other than the old one,
            # which is still bound.
            bind_host = old[0] if mode is RebindMode.PORT else self._pool.take(avoid=old[0])
            sock = self._open_outbound(bind_host)  # while the old one still holds its port
            self._unwatch_and_close(mapping.sock)
            mapping.sock = sock
            mapping.outbound = canonical(sock.getsockname())
            mapping.rebinds += 1
            self._watch(mapping)
            self.counters.rebinds[mode] += 1
            moved.append(Rebinding(mapping.caller, old, mapping.outbound))
            log.info(
                "mapping rebound",
                extra={
                    "caller": format_hostport(mapping.caller),
                    "mode": mode.value,
                    "old": format_hostport(old),
                    "new": format_hostport(mapping.outbound),
                },
            )
        return moved

    # --- reporting ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        counters = self.counters
        return {
            "listen": format_hostport(self.listen_address) if self.listen_address else None,
            "upstream": format_hostport(self.upstream),
            "mappings": [
                {
                    "caller": format_hostport(m.caller),
                    "outbound": format_hostport(m.outbound),
                    "packets_up": m.packets_up,
                    "packets_down": m.packets_down,
                    "rebinds": m.rebinds,
                    "age_s": round(now - m.created_at, 3),
                    "idle_s": round(now - m.last_seen, 3),
                }
                for m in self.mappings.values()
            ],
            "counters": {
                "mappings_opened": counters.mappings_opened,
                "mappings_expired": counters.mappings_expired,
                "mapping_limit_drops": counters.mapping_limit_drops,
                "stale_drops": counters.stale_drops,
                "send_errors": counters.send_errors,
                "receive_errors": counters.receive_errors,
                "rebinds": {mode.value: n for mode, n in counters.rebinds.items()},
            },
        }


def _grow_receive_buffer(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # only a hint; the kernel may cap or refuse it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
