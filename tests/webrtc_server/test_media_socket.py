"""The media socket over real UDP: one port for every session, and the encap header's trust rule."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from tests.webrtc_server.conftest import SECRET, MakeOffer, StartMedia, udp_ports_open
from webrtc_server.config import Forward, MediaSocketMode
from wire import proxy_protocol, route_token, stun

SDP = {"Content-Type": "application/sdp"}
CLIENT = ("198.51.100.7", 40000)  # the caller a relay's header names
PUBLIC = ("203.0.113.10", 3478)  # the relay's public address, as the header names it


async def new_session(client: Any, make_offer: MakeOffer) -> dict[str, Any]:
    _pc, offer = await make_offer()
    response = await client.post("/sessions", data=offer, headers=SDP)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await (await client.get(response.headers["Location"])).json()
    return body


def check_for(session: dict[str, Any]) -> tuple[bytes, bytes]:
    ufrag = session["server_ufrag"]
    tid = os.urandom(12)
    request = stun.binding_request(
        tid, f"{ufrag}:peer", route_token.ice_password(SECRET, ufrag), tie_breaker=1
    )
    return tid, request


class Peer:
    """A UDP socket on loopback: a stand-in for a caller or for a relay's internal socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()

    async def send(self, data: bytes, port: int) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, ("127.0.0.1", port))

    async def receive(self, timeout_s: float = 1.0) -> bytes | None:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.get_running_loop().sock_recv(self.sock, 2048)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Any:
    made: list[Peer] = []

    def make() -> Peer:
        made.append(Peer())
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


async def drops(client: Any, reason: str) -> float:
    text = await (await client.get("/metrics")).text()
    return metric(text, f'rtclab_media_socket_drops_total{{reason="{reason}"}}')


async def test_every_session_shares_one_port_and_checks_find_their_session(
    media: StartMedia, make_offer: MakeOffer, peers: Any
) -> None:
    client = await media()
    health = await (await client.get("/healthz")).json()
    first, second = [await new_session(client, make_offer) for _ in range(2)]
    port = first["local_port"]
    assert second["local_port"] == port and health["media_address"] == f"127.0.0.1:{port}"
    assert port in udp_ports_open()
    # Each session's own agent answers checks naming its ufrag, signed with its password.
    for session in (first, second):
        caller = peers()
        tid, request = check_for(session)
        await caller.send(request, port)
        reply = await caller.receive()
        assert reply is not None
        answer = stun.parse(reply)
        assert answer.transaction_id == tid
        password = route_token.ice_password(SECRET, session["server_ufrag"])
        # Signed with that session's password (401s are not signed: unauthenticated).
        if answer.is_success:
            assert stun.check_integrity(answer, reply, password.encode())
        body = await (await client.get(f"/sessions/{session['id']}")).json()
        assert body["remotes"] == [{"remote": f"127.0.0.1:{caller.address[1]}", "via": None}], body[
            "remotes"
        ]
    # A stranger's media, and a check naming nobody, are dropped and counted.
    stranger = peers()
    await stranger.send(b"\x80\x6f" + bytes(100), port)
    await stranger.send(stun.binding_request(os.urandom(12), "nobodyXX:peer", "x" * 22), port)
    assert await stranger.receive(0.3) is None
    assert await drops(client, "unknown_source") == 1
    assert await drops(client, "unknown_ufrag") == 1


@pytest.mark.parametrize("socket_mode", [m.value for m in MediaSocketMode])
async def test_encap_believes_headers_only_from_a_trusted_relay(
    media: StartMedia, make_offer: MakeOffer, peers: Any, socket_mode: str
) -> None:
    relay, impostor = peers(), peers()
    client = await media(
        forward=Forward.ENCAP,
        media_socket=MediaSocketMode(socket_mode),
        trusted_relays=(tuple(relay.address),),
    )
    session = await new_session(client, make_offer)
    port = session["local_port"]
    header = proxy_protocol.encode(CLIENT, PUBLIC)

    # The same encapsulated check from an address that is not the relay: nothing.
    _tid, request = check_for(session)
    await impostor.send(header + request, port)
    assert await impostor.receive(0.5) is None
    assert await drops(client, "untrusted_relay") == 1

    # From the relay, but bare or with a broken header: nothing either.
    await relay.send(request, port)
    await relay.send(header[:12] + b"\x11" + header[13:] + request, port)  # version 1
    assert await relay.receive(0.5) is None
    assert await drops(client, "no_header") == 1
    assert await drops(client, "bad_header") == 1
    assert (
        session["id"]
        and (await (await client.get(f"/sessions/{session['id']}")).json())["remotes"] == []
    )

    # From the relay with a good header: the agent answers the CLIENT, through the relay,
    # behind the same header.
    tid, request = check_for(session)
    await relay.send(header + request, port)
    reply = await relay.receive()
    assert reply is not None
    source, offset = proxy_protocol.proxied_source(reply)
    assert source == CLIENT and reply[:offset] == header
    answer = stun.parse(reply[offset:])
    assert answer.transaction_id == tid
    body = await (await client.get(f"/sessions/{session['id']}")).json()
    assert body["remotes"] == [
        {"remote": f"{CLIENT[0]}:{CLIENT[1]}", "via": f"127.0.0.1:{relay.address[1]}"}
    ]
    assert body["forward"] == "encap" and body["media_socket"] == socket_mode
