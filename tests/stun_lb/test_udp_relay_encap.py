"""The relay with --forward encap over real sockets.

Client datagrams leave one internal socket behind a header; replies go where their header says.
"""

from __future__ import annotations

from typing import Any

from stun_lb.core.config import ForwardMode
from stun_lb.core.state import decode_record
from tests.stun_lb.harness import OpenPeer, StartRelay, stored
from tests.stun_lb.packets import SECRET, Session, new_tid, rtp
from tests.stun_lb.peers import UdpPeer
from tests.stun_lb.redis_server import RedisServer
from wire import proxy_protocol, route_token, stun
from wire.addr import Address


class EncapBackend(UdpPeer):
    """A media server's shared socket behind an encap relay, as far as the relay can tell.

    It strips the header, answers Binding requests to the client the header
    names (XOR-MAPPED-ADDRESS = that client) and sends the answer back
    behind the same header, to whoever sent it; it queues (header source,
    payload, sender) for the test.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Address, bytes, Address]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        sender = (addr[0], addr[1])
        client, offset = proxy_protocol.proxied_source(data)
        payload = data[offset:]
        self.seen.append((client, payload, sender))
        super().datagram_received(payload, sender)
        if payload[0] > 3:
            return
        message = stun.parse(payload)
        if message.is_request and message.username:
            password = route_token.ice_password(SECRET, route_token.server_ufrag(message.username))
            answer = stun.binding_success(message.transaction_id, client, password)
            self.send(data[:offset] + answer, sender)


async def encap_relay(start_relay: StartRelay, **changes: Any) -> Any:
    return await start_relay(forward=ForwardMode.ENCAP, internal=("127.0.0.1", 0), **changes)


async def test_a_call_crosses_the_relay_with_the_clients_own_address(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await encap_relay(start_relay)
    backend: EncapBackend = await peers(EncapBackend)
    client: UdpPeer = await peers()
    session = Session(backend_id=1, port=backend.address[1])
    internal = relay.relay.internal_address

    tid = new_tid()
    client.send(session.check(tid), relay.address)
    answer, source = await client.recv()
    assert source == relay.address
    parsed = stun.parse(answer)
    assert parsed.transaction_id == tid and parsed.is_success
    # The media server saw the client's own address, in a header sent from the internal socket.
    [(named, payload, sender)] = backend.seen
    assert named == client.address and sender == internal
    assert stun.parse(payload).transaction_id == tid
    assert parsed.get(stun.Attr.XOR_MAPPED_ADDRESS) == client.address

    # Media both ways.
    client.send(rtp(seq=1), relay.address)
    await backend.recv()  # the check
    data, _ = await backend.recv()
    assert data == rtp(seq=1)
    backend.send(proxy_protocol.encode(client.address, relay.address) + rtp(seq=2), internal)
    data, source = await client.recv()
    assert data == rtp(seq=2) and source == relay.address

    [flow] = await relay.flows()
    assert flow["upstream"] == f"{client.address[0]}:{client.address[1]}"
    assert flow["packets_up"] == 2 and flow["packets_down"] == 2
    health = await (await relay.admin.get("/healthz")).json()
    assert health["forward"] == "encap" and health["internal"] == f"127.0.0.1:{internal[1]}"


async def test_a_reply_needs_no_flow_but_a_backend_host_and_a_header(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await encap_relay(start_relay)
    backend: UdpPeer = await peers()  # 127.0.0.1: backend 1's host
    stranger: UdpPeer = await peers(host="127.0.0.3")  # no backend's host
    client: UdpPeer = await peers()
    internal = relay.relay.internal_address
    header = proxy_protocol.encode(client.address, relay.address)

    # The relay has never seen this client, yet a backend's reply reaches it.
    backend.send(header + rtp(seq=7), internal)
    data, source = await client.recv()
    assert data == rtp(seq=7) and source == relay.address

    stranger.send(header + rtp(seq=8), internal)
    backend.send(rtp(seq=9), internal)  # no header
    await relay.wait_for_metric(1, "rtclab_lb_drops_total", reason="untrusted_backend")
    await relay.wait_for_metric(1, "rtclab_lb_drops_total", reason="no_header")
    assert client.nothing_received()


async def test_a_header_from_a_client_is_never_read(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await encap_relay(start_relay)
    client: UdpPeer = await peers()
    victim: UdpPeer = await peers()
    header = proxy_protocol.encode(victim.address, relay.address)
    client.send(header + rtp(), relay.address)
    await relay.wait_for_metric(1, "rtclab_lb_drops_total", reason="not_webrtc")
    assert victim.nothing_received() and await relay.flows() == []


async def test_redis_stores_the_published_pair_and_another_relay_takes_the_flow_over(
    start_relay: StartRelay, peers: OpenPeer, redis_server: RedisServer
) -> None:
    first = await encap_relay(start_relay, state_url=redis_server.url)
    backend: EncapBackend = await peers(EncapBackend)
    alice: UdpPeer = await peers()
    alice.send(Session(port=backend.address[1]).check(), first.address)
    await alice.recv()

    # What Redis holds: <client address, media server>, as published (plus the ufrags).
    record = decode_record(alice.address, await stored(redis_server, alice.address))
    assert record.forward is ForwardMode.ENCAP
    assert (record.client, record.backend) == (alice.address, backend.address)
    assert record.upstream == alice.address

    # A relay that never saw Alice finds her flow at her first datagram, and the media
    # server sees nothing change: the same client address, named by a header.
    second = await encap_relay(start_relay, state_url=redis_server.url)
    alice.send(rtp(seq=5), second.address)
    await second.wait_for_metric(1, "rtclab_lb_state_lookups_total", result="hit")
    while backend.seen[-1][1] != rtp(seq=5):
        await backend.recv()
    named, _, sender = backend.seen[-1]
    assert named == alice.address and sender == second.relay.internal_address
