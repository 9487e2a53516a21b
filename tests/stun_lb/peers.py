"""Plain UDP sockets for the relay's socket tests: clients, and a fake media server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from wire import route_token, stun
from wire.addr import Address

# Only a guard against hanging: everything here happens in milliseconds.
HANG_GUARD_S = 10.0


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(
            lambda: cls(**kwargs), local_addr=(host, port)
        )
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.queue.get(), HANG_GUARD_S)

    def nothing_received(self) -> bool:
        return self.queue.empty()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FakeBackend(UdpPeer):
    """A media server's session socket, as far as the relay can tell.

    With ``answer_checks`` it answers every Binding request with a Binding
    success (same transaction id, signed with the password derived from the
    route token) the way an ICE agent does; either way it queues everything
    it receives, checks included, so tests can see what reached it and from
    which peer address.
    """

    def __init__(self, secret: bytes = b"", answer_checks: bool = True) -> None:
        super().__init__()
        self.secret = secret
        self.answer_checks = answer_checks

    def datagram_received(self, data: bytes, addr: Any) -> None:
        super().datagram_received(data, addr)
        if not self.answer_checks or not data or data[0] > 3:
            return
        try:
            message = stun.parse(data)
        except stun.StunError:
            return
        if message.is_request and message.username:
            server_ufrag = route_token.server_ufrag(message.username)
            password = route_token.ice_password(self.secret, server_ufrag)
            peer = (addr[0], addr[1])
            self.send(stun.binding_success(message.transaction_id, peer, password), peer)
