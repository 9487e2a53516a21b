"""The asyncio shell around the router: one public UDP socket, and a path per flow to its backend.

``--forward nat`` (the default): one connected upstream socket per flow.
``--forward encap``: one internal socket for every flow; a client datagram
leaves it behind its flow's PROXY v2 header, and whatever a backend sends to
it comes back out of the public socket to the client its header names.

It reads datagrams, hands each to the :class:`~stun_lb.core.router.Router`
with the loop's clock, sends where the decision says, opens and closes
upstream sockets on the router's events, and keeps ONE timer armed at the
router's next deadline.  No routing decision is made here.

Reading: every socket is registered with ``loop.add_reader`` and drained with
``recvfrom_into``/``recv_into`` into one preallocated 64 KiB buffer until the
kernel says EAGAIN (or a batch limit, so a flood on one socket cannot starve
the others or the admin HTTP server).  The datagram is passed on as a
``memoryview`` slice of that buffer, so forwarding copies nothing in Python.
asyncio's ``DatagramProtocol`` on the stdlib loop instead allocates a 256 KiB
``bytes`` per datagram.  Measured on a 2-core VM (200-byte datagrams, 100
flows, relay CPU time per forwarded datagram, median of 5 runs): this reader
8.4 us on uvloop and 9.3 us on the stdlib loop; ``DatagramProtocol`` 10.8 us
and 15.1 us; ``recvfrom(2048)`` readers 9.9 and 9.3 us.  The two send/receive
syscalls are most of it, so one design serves both loops and the loop choice
matters little here.  Every datagram handled in one callback shares one
``loop.time()`` reading: idle expiry is measured in seconds.

Sharing the port (``--reuse-port``, ``--workers``): the public socket is
bound with SO_REUSEPORT, so the kernel hashes each client address onto one
of the sockets bound there; when one closes (its process died) its clients
are rehashed onto the others.

Taking a flow over from shared state (``--state redis``): the upstream
socket is bound to the local address the previous relay's socket had, when
that address is free, because the media server keeps sending to the peer it
nominated; otherwise to a fresh port.  Upstream sockets never set
SO_REUSEPORT: the recorded address must be taken only when its owner is
gone (a live owner's socket makes the bind fail), and an ephemeral bind
with SO_REUSEPORT may be handed a port another such socket of ours holds.

The internal socket (encap) takes SO_REUSEPORT with ``--reuse-port``: relays
sharing the public port share it too, and since a reply needs no state,
whichever of them the kernel hands it to can deliver it.  A client datagram
leaves with ``sendmsg`` of [header, datagram], so the payload is not copied
to prepend 28 bytes; a reply is passed on as a view past its header.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import time
from typing import TYPE_CHECKING

from stun_lb.core.config import RelayConfig, redact_url
from stun_lb.core.events import (
    ClientMoved,
    Decap,
    FlowClosed,
    FlowOpened,
    ForwardDown,
    ForwardUp,
    LookupRequested,
)
from stun_lb.core.router import Replay, Router
from wire.addr import Address, canonical, format_hostport

if TYPE_CHECKING:
    from stun_lb.io.state import RedisState

log = logging.getLogger("stun_lb")

# Larger than any UDP payload (65,507 bytes over IPv4), so nothing is truncated.
_BUFFER_BYTES = 65536
# Datagrams per readable callback before yielding to the loop: large enough to
# amortise the callback, small enough that other sockets get a turn promptly.
_BATCH = 64


class UdpRelay:
    """The relay's sockets.  ``await start()``, then ``close()`` (idempotent)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.router = Router(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._public: socket.socket | None = None
        self._canonical_source = False
        self._buffer = bytearray(_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        # backend host as configured -> (family, address to connect to)
        self._resolved: dict[str, tuple[int, str]] = {}
        self._upstream: dict[int, socket.socket] = {}
        # encap: the internal socket, and each flow's (header, backend address).
        self._internal: socket.socket | None = None
        self._encap_routes: dict[int, tuple[bytes, tuple[str, int]]] = {}
        self._internal_canonical = False
        self.state: RedisState | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self.started_wall = 0.0

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        for host in set(self.config.backends.values()):
            self._resolved[host] = await _resolve(loop, host)
        if self.config.state_url is not None:
            # Imported here: a relay with in-memory state never loads the Redis client.
            from stun_lb.io.state import RedisState

            assert self.router.writes is not None
            self.state = RedisState(
                self.config.state_url,
                self.config,
                self.router.counters,
                self.router.writes,
                self.router.store_health,
                self._on_lookup_answer,
            )
            # Before the port is bound: once it is, the kernel hands this
            # process clients, and a slow first contact must not hold them.
            await self.state.start()
        public = await self._bind(loop, self.config.listen)
        self._public = public
        # IPv6 sources come as 4-tuples; IPv4 ones are already canonical (host, port).
        self._canonical_source = public.family == socket.AF_INET6
        if self.router.encap:
            try:
                self._internal = await self._bind(loop, self.config.internal_address)
            except OSError:
                public.close()
                self._public = None
                raise
            self._internal_canonical = self._internal.family == socket.AF_INET6
        self.router.on_listening(
            self.local_address, frozenset(address for _, address in self._resolved.values())
        )
        if self._internal is None:
            _raise_open_files_limit(self.config.max_flows)
        else:
            loop.add_reader(self._internal.fileno(), self._on_internal_readable)
        loop.add_reader(public.fileno(), self._on_public_readable)
        self.started_wall = time.time()
        log.info(
            "relay listening",
            extra={
                "udp": format_hostport(self.local_address),
                "backends": {str(k): v for k, v in sorted(self.config.backends.items())},
                "rebind": self.config.rebind.value,
                "verify_integrity": self.config.verify_integrity,
                "idle_timeout_s": self.config.idle_timeout_s,
                "max_flows": self.config.max_flows,
                "loop": type(loop).__module__.split(".")[0],
                "reuse_port": self.config.reuse_port,
                "state": redact_url(self.config.state_url) if self.config.state_url else "memory",
                "forward": self.config.forward.value,
                "internal": format_hostport(self.internal_address) if self._internal else None,
            },
        )

    async def _bind(self, loop: asyncio.AbstractEventLoop, where: Address) -> socket.socket:
        """A non-blocking UDP socket bound to ``where`` (the public one, or the internal one)."""
        family, address = await _resolve(loop, where[0])
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # No IPv4-mapped sources: one client, one key in the flow table.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _set_buffers(sock, self.config.socket_buffer_bytes)
            if self.config.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            sock.bind((address, where[1]))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Close every socket; call :meth:`wait_closed` after, to finish the state tasks."""
        if self.state is not None:
            self.state.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for flow_id in list(self._upstream):
            self._close_upstream(flow_id)
        self._encap_routes.clear()
        if self._internal is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._internal.fileno())
            self._internal.close()
            self._internal = None
        if self._public is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._public.fileno())
            self._public.close()
            self._public = None
            log.info("relay closed", extra={"flows": len(self.router.table)})

    async def wait_closed(self) -> None:
        if self.state is not None:
            await self.state.wait_closed()
            self.state = None

    @property
    def local_address(self) -> Address:
        assert self._public is not None, "start() first"
        return canonical(self._public.getsockname())

    @property
    def internal_address(self) -> Address:
        """encap: where the internal socket is bound (the media servers' --trusted-relay)."""
        assert self._internal is not None, "start() with --forward encap first"
        return canonical(self._internal.getsockname())

    def upstream_address(self, flow_id: int) -> Address | None:
        """The peer the backend sees for a flow: the relay's upstream socket (nat) or the
        client address the header names (encap)."""
        flow = self.router.table.get(flow_id)
        return flow.upstream if flow is not None else None

    def wall_time(self, loop_time: float) -> float:
        """A loop-clock reading as Unix time (for people reading /flows)."""
        assert self._loop is not None
        return time.time() - (self._loop.time() - loop_time)

    # --- the hot paths ---------------------------------------------------------

    def _on_public_readable(self) -> None:
        assert self._public is not None and self._loop is not None
        recvfrom_into = self._public.recvfrom_into
        buffer, view = self._buffer, self._view
        router = self.router
        upstream = self._upstream
        internal, encap_routes = self._internal, self._encap_routes
        canonical_source = self._canonical_source
        now = self._loop.time()
        for _ in range(_BATCH):
            try:
                size, source = recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ENOMEM; nothing to route, try again later
                log.debug("public socket read failed", extra={"error": str(exc)})
                return
            if canonical_source:
                source = canonical(source)
            data = view[:size]
            decision = router.on_client_datagram(data, source, now)
            if router.events:
                self._apply_events()
            if type(decision) is ForwardUp:
                if internal is not None:
                    route = encap_routes.get(decision.flow_id)
                    if route is None:
                        continue
                    try:
                        internal.sendmsg((route[0], data), (), 0, route[1])
                    except OSError:
                        router.counters.drop("send_failed")
                    continue
                sock = upstream.get(decision.flow_id)
                if sock is None:  # its socket failed to open just now; counted there
                    continue
                try:
                    sock.send(data)
                except OSError:
                    # Buffer full, or the backend's port unreachable (ICMP).
                    router.counters.drop("send_failed")

    def _on_internal_readable(self) -> None:
        """encap: the backends' replies; each goes where its header says, from the public port."""
        assert self._internal is not None and self._public is not None and self._loop is not None
        recvfrom_into = self._internal.recvfrom_into
        sendto = self._public.sendto
        buffer, view = self._buffer, self._view
        router = self.router
        canonical_source = self._internal_canonical
        now = self._loop.time()
        for _ in range(_BATCH):
            try:
                size, source = recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("internal socket read failed", extra={"error": str(exc)})
                return
            if canonical_source:
                source = canonical(source)
            decision = router.on_backend_encapsulated(view[:size], source, now)
            if router.events:
                self._apply_events()
            if type(decision) is Decap:
                try:
                    sendto(view[decision.offset : size], decision.client)
                except OSError:
                    router.counters.drop("send_failed")

    def _on_upstream_readable(self, flow_id: int, sock: socket.socket) -> None:
        assert self._public is not None and self._loop is not None
        sendto = self._public.sendto
        buffer, view = self._buffer, self._view
        router = self.router
        now = self._loop.time()
        for _ in range(_BATCH):
            try:
                size = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                # ICMP port unreachable for an earlier send: that datagram is lost.
                router.counters.drop("send_failed")
                continue
            except OSError as exc:
                log.debug("upstream read failed", extra={"flow": flow_id, "error": str(exc)})
                return
            data = view[:size]
            decision = router.on_backend_datagram(flow_id, data, now)
            if router.events:
                self._apply_events()
            if type(decision) is ForwardDown:
                try:
                    sendto(data, decision.client)
                except OSError:
                    router.counters.drop("send_failed")

    # --- flow-table events -----------------------------------------------------

    def _apply_events(self) -> None:
        router = self.router
        while router.events:
            for event in router.pop_events():
                if isinstance(event, FlowOpened):
                    if self._internal is not None:
                        self._open_encap_route(event)
                    else:
                        self._open_upstream(event)
                elif isinstance(event, FlowClosed):
                    self._close_upstream(event.flow_id)
                    self._encap_routes.pop(event.flow_id, None)
                    log.info(
                        "flow closed",
                        extra={
                            "flow": event.flow_id,
                            "client": format_hostport(event.client),
                            "reason": event.reason,
                        },
                    )
                elif isinstance(event, LookupRequested):
                    assert self.state is not None, "lookups need --state"
                    self.state.lookup(event.client)
                elif isinstance(event, ClientMoved):
                    log.info(
                        "client moved",
                        extra={
                            "flow": event.flow_id,
                            "old": format_hostport(event.old),
                            "new": format_hostport(event.new),
                            "trigger": event.trigger,
                            "rebind": self.config.rebind.value,
                        },
                    )
        self._arm_timer()
        writes = router.writes
        if writes is not None and len(writes) and self.state is not None:
            self.state.flush()

    def _on_lookup_answer(self, client: Address, value: bytes | None, failed: bool) -> None:
        """The store answered a lookup: open the flow if found, and send what was held."""
        if self._public is None or self._loop is None:
            return  # closed meanwhile
        router = self.router
        now = self._loop.time()
        replay: Replay = (
            router.on_lookup_failed(client, now)
            if failed
            else router.on_lookup_result(client, value, now)
        )
        if router.events:
            self._apply_events()
        for data, decision in replay:
            if type(decision) is not ForwardUp:
                continue
            try:
                if self._internal is not None:
                    route = self._encap_routes.get(decision.flow_id)
                    if route is not None:
                        self._internal.sendmsg((route[0], data), (), 0, route[1])
                    continue
                sock = self._upstream.get(decision.flow_id)
                if sock is not None:
                    sock.send(data)
            except OSError:
                router.counters.drop("send_failed")

    def _open_upstream(self, event: FlowOpened) -> None:
        assert self._loop is not None
        host, port = event.backend
        family, address = self._resolved[host]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        takeover: str | None = None
        try:
            sock.setblocking(False)
            if event.upstream is not None:
                # A takeover: the backend's nominated peer is the previous
                # relay's socket.  Free only if that relay is gone.
                try:
                    sock.bind(event.upstream)
                    takeover = "same"
                except OSError:
                    takeover = "new"  # still unbound: connect() picks a port
            # Connected: the kernel filters out anyone but the backend's session
            # port, and send() skips the per-datagram address lookup.
            sock.connect((address, port))
            local = canonical(sock.getsockname())
            self._loop.add_reader(sock.fileno(), self._on_upstream_readable, event.flow_id, sock)
        except OSError as exc:
            sock.close()
            self.router.counters.drop("upstream_open_failed")
            self.router.close_flow(event.flow_id, "upstream_open_failed")
            level = logging.ERROR if exc.errno in (errno.EMFILE, errno.ENFILE) else logging.WARNING
            log.log(
                level,
                "cannot open upstream socket",
                extra={"flow": event.flow_id, "backend": f"{host}:{port}", "error": str(exc)},
            )
            return
        self._upstream[event.flow_id] = sock
        self.router.on_upstream_open(event.flow_id, local, self._loop.time())
        extra = {
            "flow": event.flow_id,
            "client": format_hostport(event.client),
            "backend_id": event.backend_id,
            "backend": format_hostport(event.backend),
            "upstream": format_hostport(local),
        }
        if takeover is not None:
            self.router.counters.takeovers[takeover] += 1
            extra["takeover"] = takeover  # same: the recorded upstream address; new: not free
        log.info("flow opened", extra=extra)

    def _open_encap_route(self, event: FlowOpened) -> None:
        """encap: the flow's path is its header and its backend's address; no socket."""
        flow = self.router.table.get(event.flow_id)
        if flow is None:
            return
        host, port = event.backend
        _, address = self._resolved[host]
        self._encap_routes[event.flow_id] = (flow.encap_header, (address, port))
        extra = {
            "flow": event.flow_id,
            "client": format_hostport(event.client),
            "backend_id": event.backend_id,
            "backend": format_hostport(event.backend),
            "upstream": format_hostport(flow.upstream) if flow.upstream else None,
        }
        if event.upstream is not None:
            extra["takeover"] = "same"  # the recorded address is named again: always possible
        log.info("flow opened", extra=extra)

    def _close_upstream(self, flow_id: int) -> None:
        sock = self._upstream.pop(flow_id, None)
        if sock is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        sock.close()

    # --- the one timer ---------------------------------------------------------

    def _arm_timer(self) -> None:
        """Arm the timer at the router's next deadline unless it already fires sooner."""
        assert self._loop is not None
        deadline = self.router.next_deadline()
        if deadline is None or self._public is None:
            return
        if self._timer is not None:
            if self._timer_when <= deadline:
                return
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        # Loops fire a handle within their clock resolution of its time (uvloop:
        # a millisecond), possibly just before it; the deadline is due regardless.
        now = max(self._loop.time(), self._timer_when)
        self.router.on_timer(now)
        self._apply_events()


async def _resolve(loop: asyncio.AbstractEventLoop, host: str) -> tuple[int, str]:
    """``host`` as (family, numeric address), resolved once at start."""
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, _, _, _, sockaddr = infos[0]
    return int(family), str(sockaddr[0])


def _set_buffers(sock: socket.socket, size: int) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # The kernel caps it at net.core.{r,w}mem_max; a smaller buffer still works.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


# Descriptors besides the upstream sockets: public socket, admin listener and
# its connections, the loop's own, stdio.
_SPARE_DESCRIPTORS = 256


def _raise_open_files_limit(max_flows: int) -> None:
    """Each flow holds a socket: lift the soft open-files limit to fit, or warn."""
    wanted = max_flows + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open-files limit below --max-flows",
            extra={"limit": soft, "max_flows": max_flows, "effect": "new flows may fail"},
        )
