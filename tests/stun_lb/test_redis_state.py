"""``--state redis``: the relay in-process with real sockets and a real redis-server.

What is checked here: what reaches Redis (entries, their expiry, how many
lookups a flood causes), and what the relay does while Redis is down or
frozen.  The takeover across two relay processes is in test_failover.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from stun_lb.core.state import decode_record, record_key
from tests.stun_lb.harness import Harness, OpenPeer, StartRelay, backend_at, call, stored
from tests.stun_lb.packets import Session, rtp
from tests.stun_lb.peers import HANG_GUARD_S, FakeBackend, UdpPeer
from tests.stun_lb.redis_server import RedisServer
from wire.addr import Address


async def media_both_ways(
    relay: Harness, client: UdpPeer, backend: FakeBackend, upstream: Address, seq: int
) -> None:
    client.send(rtp(seq=seq), relay.address)
    assert await backend.recv() == (rtp(seq=seq), upstream)
    backend.send(rtp(ssrc=9, seq=seq), upstream)
    assert await client.recv() == (rtp(ssrc=9, seq=seq), relay.address)


async def test_a_flow_is_written_with_its_upstream_address_and_expires_with_the_flow(
    start_relay: StartRelay, peers: OpenPeer, redis_server: RedisServer
) -> None:
    relay = await start_relay(state_url=redis_server.url, idle_timeout_s=30.0)
    backend = await backend_at(peers)
    alice = await peers()
    session = Session(port=backend.address[1])
    upstream, _ = await call(relay, alice, backend, session)

    record = decode_record(alice.address, await stored(redis_server, alice.address))
    assert record.upstream == upstream  # the peer address the backend saw
    assert record.session == session.key and record.backend == backend.address
    with redis_server.client() as redis:
        ttl_ms = redis.pttl(record_key(alice.address))
    assert 0 < ttl_ms <= 30_000
    assert await relay.metric("rtclab_lb_state_writes_total") >= 1
    health = await (await relay.admin.get("/healthz")).json()
    assert health["state"] == redis_server.url and health["state_up"] is True


async def test_redis_down_known_flows_keep_forwarding_and_writes_resume_when_it_returns(
    start_relay: StartRelay,
    peers: OpenPeer,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="stun_lb")
    # A 3 s idle timeout refreshes active flows every second.
    relay = await start_relay(
        state_url=redis_server.url, idle_timeout_s=3.0, state_timeout_s=0.3, state_retry_s=0.2
    )
    backend = await backend_at(peers)
    alice, bob, carol, mallory = [await peers() for _ in range(4)]
    port = backend.address[1]
    alice_upstream, _ = await call(relay, alice, backend, Session(port=port, client_ufrag="a"))
    await stored(redis_server, alice.address)

    redis_server.kill()
    await media_both_ways(relay, alice, backend, alice_upstream, seq=1)
    # A new flow still opens by its STUN check; only sharing it fails.
    bob_upstream, _ = await call(relay, bob, backend, Session(port=port, client_ufrag="b"))
    await media_both_ways(relay, bob, backend, bob_upstream, seq=2)
    await relay.wait_for_metric(1, "rtclab_lb_state_errors_total", op="write")
    mallory.send(rtp(), relay.address)  # unknown: its lookup fails
    await relay.wait_for_metric(1, "rtclab_lb_drops_total", reason="lookup_failed")
    # Bob's check was looked up first too (the outage was not known yet), then opened.
    assert await relay.metric("rtclab_lb_state_errors_total", op="lookup") >= 1
    assert await relay.metric("rtclab_lb_state_up") == 0
    health = await (await relay.admin.get("/healthz")).json()
    assert health["status"] == "ok" and health["state_up"] is False
    await media_both_ways(relay, alice, backend, alice_upstream, seq=3)

    redis_server.start()  # same port, empty: everything written before is gone
    await call(relay, carol, backend, Session(port=port, client_ufrag="c"))
    await stored(redis_server, carol.address)  # new flows are written again
    # Alice's entry, lost with the old Redis, comes back with her next refresh.
    refreshed = asyncio.create_task(stored(redis_server, alice.address))
    seq = 4
    while not refreshed.done():
        await media_both_ways(relay, alice, backend, alice_upstream, seq=seq)
        seq += 1
        await asyncio.sleep(0.05)
    await refreshed
    assert await relay.metric("rtclab_lb_state_up") == 1

    events = [record.getMessage() for record in caplog.records]
    assert sum(event.startswith("state store unavailable") for event in events) == 1
    assert events.count("state store available again") == 1


async def test_a_flood_of_unknown_sources_is_bounded_before_it_reaches_redis(
    start_relay: StartRelay, peers: OpenPeer, redis_server: RedisServer
) -> None:
    relay = await start_relay(
        state_url=redis_server.url,
        max_lookups_in_flight=4,
        lookup_hold_packets=2,
        negative_ttl_s=60.0,
        state_timeout_s=0.5,
    )
    backend = await backend_at(peers)
    alice = await peers()
    alice_upstream, _ = await call(relay, alice, backend, Session(port=backend.address[1]))
    keys_before = redis_server.keys_read()
    commands_before = redis_server.calls("mget")
    misses_before = await relay.metric("rtclab_lb_state_lookups_total", result="miss")

    # 60 unknown sources, 3 datagrams each: at most one key looked up per source.
    flood = [await peers() for _ in range(60)]
    for seq in range(3):
        for source in flood:
            source.send(rtp(seq=seq), relay.address)
    reasons = ("unknown_source", "lookup_busy", "lookup_overflow")
    deadline = asyncio.get_running_loop().time() + HANG_GUARD_S
    while True:
        metrics = await relay.metrics()
        dropped = sum(
            metrics[("rtclab_lb_drops_total", frozenset({("reason", r)}))] for r in reasons
        )
        if dropped == 180:
            break
        assert asyncio.get_running_loop().time() < deadline, f"only {dropped} of 180 dropped"
        await asyncio.sleep(0.02)
    misses = await relay.metric("rtclab_lb_state_lookups_total", result="miss")
    lookups = misses - misses_before
    assert 1 <= lookups <= 60
    assert redis_server.keys_read() - keys_before == lookups
    # Addresses waiting at the same time share one round trip.
    assert 1 <= redis_server.calls("mget") - commands_before <= lookups
    assert await relay.metric("rtclab_lb_flows") == 1

    # Redis frozen: lookups hang, so exactly the bound is in flight, the rest
    # is dropped without a lookup, and known flows keep forwarding meanwhile.
    redis_server.freeze()
    busy = await relay.metric("rtclab_lb_drops_total", reason="lookup_busy")
    second = [await peers() for _ in range(40)]
    for source in second:
        source.send(rtp(), relay.address)
    await relay.wait_for_metric(busy + 36, "rtclab_lb_drops_total", reason="lookup_busy")
    assert await relay.metric("rtclab_lb_state_lookups_in_flight") == 4
    await media_both_ways(relay, alice, backend, alice_upstream, seq=1)
    await relay.wait_for_metric(4, "rtclab_lb_state_lookups_total", result="error")
    assert await relay.metric("rtclab_lb_state_lookups_in_flight") == 0
    assert await relay.metric("rtclab_lb_drops_total", reason="lookup_failed") == 4
    redis_server.thaw()
    assert redis_server.keys_read() - keys_before <= lookups + 4
