"""The shell around the demultiplexer: one UDP socket, and a per-session endpoint aioice talks to.

:class:`MediaSocket` owns a UDP socket and a :class:`~webrtc_server.core.demux.Demux`.
Each session's ICE agent gets an :class:`Endpoint`: the asyncio transport its
``StunProtocol`` sends through (``sendto``, ``close``), and the thing the
socket hands that session's datagrams to.  :func:`webrtc_server.aioice_patch.gather_on`
plugs the endpoint into aioice's gathering, so aioice itself never binds a
socket.  Every routing decision is the demultiplexer's; this module moves
bytes and keeps the clock.

:class:`MediaSockets` is the server's choice of where sessions' media go:

* ``--media-socket shared``: one socket for the server (``--media-port``),
  every session an endpoint on it -- the published design;
* ``--media-socket per-session`` with ``--forward encap``: a socket per
  session (the route token names its port), still through this shell, which
  strips and adds the PROXY header;
* ``--media-socket per-session`` with ``--forward nat``: aioice's own socket
  per session, exactly as before this module existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, cast

from webrtc_server.config import Forward, MediaConfig, MediaSocketMode
from webrtc_server.core.demux import Deliver, Demux, DemuxConfig, DemuxCounters, SendTo, Trust
from wire.addr import Address, canonical, format_hostport

log = logging.getLogger("rtclab.media")


class Endpoint:
    """One session's view of a media socket: an asyncio ``DatagramTransport`` for aioice."""

    def __init__(self, owner: MediaSocket, protocol: asyncio.DatagramProtocol) -> None:
        self._owner = owner
        self.protocol = protocol
        self.ufrag: str | None = None
        self._closing = False

    # --- what aioice's StunProtocol calls -----------------------------------------

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self._closing:
            return
        self._owner.send(self, data, canonical(addr))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._owner.release(self)
        loop = asyncio.get_running_loop()
        # As an asyncio transport does: connection_lost on the next loop pass.
        loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._owner.local_address
        return default  # no "socket": aioice must not set options on a shared one

    # --- what the media server calls -----------------------------------------------

    def register(self, ufrag: str) -> bool:
        """Route checks naming ``ufrag`` here; False if another session holds it."""
        if not self._owner.demux.register(ufrag, self):
            return False
        self.ufrag = ufrag
        return True

    def remotes(self) -> list[dict[str, str | None]]:
        """The remote addresses this session owns (and, under encap, the relay each came via)."""
        return [
            {
                "remote": format_hostport(remote.address),
                "via": format_hostport(remote.via) if remote.via else None,
            }
            for remote in self._owner.demux.remotes(self)
        ]

    @property
    def local_address(self) -> Address:
        return self._owner.local_address


class MediaSocket(asyncio.DatagramProtocol):
    """A UDP socket whose datagrams the demultiplexer hands to sessions' endpoints."""

    def __init__(self, demux: Demux[Endpoint]) -> None:
        self.demux = demux
        self._transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self.local_address: Address = ("0.0.0.0", 0)

    @classmethod
    async def open(
        cls, host: str, port: int, demux: Demux[Endpoint], buffer_bytes: int
    ) -> MediaSocket:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                # Every session's media shares this buffer; the kernel caps it at rmem_max.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, buffer_bytes)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        _, media = await loop.create_datagram_endpoint(lambda: cls(demux), sock=sock)
        return media

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local_address = canonical(transport.get_extra_info("sockname"))

    def attach(self, protocol: asyncio.DatagramProtocol) -> Endpoint:
        """A new endpoint for one session's ICE agent (``protocol``), connected to it."""
        endpoint = Endpoint(self, protocol)
        protocol.connection_made(endpoint)  # type: ignore[arg-type]
        return endpoint

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        decision = self.demux.route(data, canonical(addr), self._loop.time())
        if type(decision) is Deliver:
            payload = data if decision.offset == 0 else data[decision.offset :]
            decision.session.protocol.datagram_received(payload, decision.remote)

    def send(self, endpoint: Endpoint, data: bytes, remote: Address) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        decision = self.demux.route_reply(endpoint, remote)
        if type(decision) is SendTo:
            transport.sendto(
                decision.header + data if decision.header else data, decision.destination
            )

    def error_received(self, exc: Exception) -> None:
        log.debug("media socket error", extra={"error": str(exc)})

    def release(self, endpoint: Endpoint) -> None:
        self.demux.release(endpoint)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class MediaSockets:
    """Where the server's sessions send and receive, per ``--media-socket`` and ``--forward``."""

    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self.counters = DemuxCounters()
        self._demux_config = DemuxConfig(
            encap=config.forward is Forward.ENCAP, trusted=Trust.of(config.trusted_relays)
        )
        self.shared: MediaSocket | None = None
        self._per_session: set[MediaSocket] = set()

    @property
    def uses_endpoints(self) -> bool:
        """False only where aioice binds each session's socket itself (per-session, nat)."""
        config = self.config
        return config.media_socket is MediaSocketMode.SHARED or config.forward is Forward.ENCAP

    async def start(self) -> None:
        config = self.config
        if config.media_socket is MediaSocketMode.SHARED:
            self.shared = await MediaSocket.open(
                config.bind_host,
                config.media_port,
                Demux(self._demux_config, self.counters),
                config.socket_buffer_bytes,
            )
            log.info(
                "media socket open",
                extra={
                    "udp": format_hostport(self.shared.local_address),
                    "forward": config.forward.value,
                },
            )

    async def endpoint_socket(self) -> MediaSocket:
        """The socket a new session's endpoint goes on (a fresh one per session if asked)."""
        if self.shared is not None:
            return self.shared
        media = await MediaSocket.open(
            self.config.bind_host,
            0,
            Demux(self._demux_config, self.counters),
            self.config.socket_buffer_bytes,
        )
        self._per_session.add(media)
        return media

    def done_with(self, media: MediaSocket) -> None:
        """The session that asked for ``media`` has closed: a per-session socket goes too."""
        if media is not self.shared and media in self._per_session:
            media.close()
            self._per_session.discard(media)

    @property
    def open_sockets(self) -> int:
        """Media sockets this shell holds now (aioice's own per-session ones not included)."""
        return (1 if self.shared is not None else 0) + len(self._per_session)

    def close(self) -> None:
        for media in list(self._per_session):
            media.close()
        self._per_session.clear()
        if self.shared is not None:
            self.shared.close()
            self.shared = None
