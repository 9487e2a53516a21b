"""Two relay processes on one UDP port (``--reuse-port``); one is SIGKILLed mid-call.

Relay A is started alone and the flow is created through it; only then
does relay B join the port, and A is killed before the client sends again,
so the kernel has exactly one socket left for the client's next datagram:
B's.  With ``--state redis`` B finds the flow in Redis at that first datagram
and reopens it from A's upstream address, so the backend (which keeps
sending to the peer it nominated) reaches the client again.  With
``--state memory`` B drops the client's media until its next STUN check,
and that check reaches the backend from a new peer address.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stun_lb.core.state import decode_record, record_key
from tests.stun_lb.packets import Session, new_tid, rtp
from tests.stun_lb.processes import RelayProcess, free_port, udp_socket, wait_until
from tests.stun_lb.redis_server import RedisServer
from wire import stun


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.kill()


def test_with_redis_the_surviving_relay_takes_the_flow_over_from_the_same_upstream(
    relays: list[RelayProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    options = ("--reuse-port", "--state", redis_server.url)
    backend, client = udp_socket(), udp_socket()
    session = Session(port=backend.getsockname()[1])

    relay_a = RelayProcess(port, *options, log_dir=tmp_path)
    relays.append(relay_a)
    tid = new_tid()
    client.sendto(session.check(tid), relay_a.address)
    check, upstream = backend.recvfrom(2048)
    assert stun.parse(check).transaction_id == tid
    key = record_key(client.getsockname())
    with redis_server.client() as redis:
        wait_until(lambda: redis.exists(key), "relay A to write the flow")
        entry = redis.get(key)
    assert isinstance(entry, bytes)
    assert decode_record(client.getsockname(), entry).upstream == upstream

    relay_b = RelayProcess(port, *options, log_dir=tmp_path)
    relays.append(relay_b)
    relay_a.kill()

    # The first datagrams after the kill: RTP, no STUN check in sight.
    for seq in (1, 2, 3):
        client.sendto(rtp(seq=seq), relay_b.address)
    for seq in (1, 2, 3):  # held during the lookup, then forwarded in order
        assert backend.recvfrom(2048) == (rtp(seq=seq), upstream)  # from A's upstream address
    backend.sendto(rtp(ssrc=0xB0B), upstream)  # the backend's nominated peer still works
    assert client.recvfrom(2048) == (rtp(ssrc=0xB0B), relay_b.address)

    assert relay_b.metric("rtclab_lb_state_takeovers_total", upstream="same") == 1
    assert relay_b.metric("rtclab_lb_state_takeovers_total", upstream="new") == 0
    assert relay_b.metric("rtclab_lb_state_lookups_total", result="hit") == 1
    assert relay_b.metric("rtclab_lb_drops_total", reason="unknown_source") == 0
    [flow] = relay_b.get("/flows")
    assert flow["upstream"] == f"127.0.0.1:{upstream[1]}"
    assert relay_b.stop() == 0


def test_with_memory_state_the_surviving_relay_drops_media_until_the_next_check(
    relays: list[RelayProcess], tmp_path: Path
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    backend, client = udp_socket(), udp_socket()
    session = Session(port=backend.getsockname()[1])

    relay_a = RelayProcess(port, "--reuse-port", log_dir=tmp_path)
    relays.append(relay_a)
    client.sendto(session.check(), relay_a.address)
    _, upstream = backend.recvfrom(2048)
    relay_b = RelayProcess(port, "--reuse-port", log_dir=tmp_path)
    relays.append(relay_b)
    relay_a.kill()

    client.sendto(rtp(seq=1), relay_b.address)
    wait_until(
        lambda: relay_b.metric("rtclab_lb_drops_total", reason="unknown_source") == 1,
        "relay B to drop the unknown client's media",
    )
    # The next consent check opens a new flow, from a NEW peer address.
    tid = new_tid()
    client.sendto(session.check(tid), relay_b.address)
    check, new_upstream = backend.recvfrom(2048)
    assert stun.parse(check).transaction_id == tid
    assert new_upstream != upstream
    backend.sendto(rtp(ssrc=7), new_upstream)
    assert client.recvfrom(2048) == (rtp(ssrc=7), relay_b.address)
    assert relay_b.stop() == 0


def test_two_relays_on_one_port_split_clients_between_them(
    relays: list[RelayProcess], tmp_path: Path
) -> None:
    """--reuse-port alone: both relays serve clients (the kernel hashes the addresses)."""
    port = free_port(socket.SOCK_DGRAM)
    backend = udp_socket()
    relays.extend(RelayProcess(port, "--reuse-port", log_dir=tmp_path) for _ in range(2))
    clients = [udp_socket() for _ in range(16)]
    for index, client in enumerate(clients):
        client.sendto(
            Session(port=backend.getsockname()[1], client_ufrag=f"c{index}").check(),
            ("127.0.0.1", port),
        )
    for _ in clients:
        backend.recvfrom(2048)
    flows = [len(relay.get("/flows")) for relay in relays]
    # All 16 on one relay by chance: odds of 2 in 65536.
    assert sum(flows) == 16 and min(flows) >= 1, flows
