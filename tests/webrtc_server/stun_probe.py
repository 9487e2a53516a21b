"""TEST HELPER: send one ICE connectivity check over a real UDP socket, return the reply."""

from __future__ import annotations

import asyncio
import os
import socket

from wire import stun


async def connectivity_check(
    port: int, username: str, password: str, host: str = "127.0.0.1", timeout_s: float = 2.0
) -> stun.StunMessage | None:
    """A Binding request as a full ICE agent sends it; the parsed reply, or None."""
    loop = asyncio.get_running_loop()
    transaction_id = os.urandom(12)
    request = stun.binding_request(
        transaction_id, username, password, controlling=True, tie_breaker=1
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, request, (host, port))
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    data = await loop.sock_recv(sock, 2048)
                    reply = stun.parse(data)
                    if reply.transaction_id == transaction_id:
                        return reply
        except TimeoutError:
            return None
