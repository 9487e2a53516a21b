"""The relay with real UDP sockets on loopback: plain sockets as clients, a fake backend.

The relay runs inside its admin app (as in production), started through
``aiohttp_client``; every test runs on the stdlib loop and on uvloop.

No test waits for something NOT to arrive.  The relay handles datagrams in
the order they reach its public socket, and sends each to exactly one place,
so "the next datagram the backend receives is the valid check" proves the
bad datagrams sent before it were dropped, and "the old address received it"
proves the new one did not.
"""

from __future__ import annotations

import asyncio

import pytest

from stun_lb.core.config import RebindPolicy
from tests.stun_lb.harness import OpenPeer, StartRelay, backend_at, call
from tests.stun_lb.packets import Session, dtls_record, new_tid, rtp
from tests.stun_lb.peers import HANG_GUARD_S
from wire import stun
from wire.addr import format_hostport

# --- routing and forwarding -------------------------------------------------------


async def test_checks_are_routed_by_the_backend_id_and_port_in_the_token(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    # Two media servers on different hosts, listening on the SAME port: only
    # the backend id in the token can tell them apart.
    first = await backend_at(peers, "127.0.0.1")
    port = first.address[1]
    second = await backend_at(peers, "127.0.0.2", port)
    alice, bob = await peers(), await peers()

    await call(relay, alice, first, Session(backend_id=1, port=port))
    await call(relay, bob, second, Session(backend_id=2, port=port, client_ufrag="bob1"))

    assert first.nothing_received() and second.nothing_received()
    flows = {flow["client_ufrag"]: flow for flow in await relay.flows()}
    assert flows["cli1"]["backend"] == f"127.0.0.1:{port}"
    assert flows["bob1"]["backend"] == f"127.0.0.2:{port}"


async def test_media_is_forwarded_both_ways_unchanged(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    alice = await peers()
    upstream, _ = await call(relay, alice, backend, Session(port=backend.address[1]))

    for seq, datagram in enumerate((dtls_record(), rtp(seq=1), rtp(payload=b"\x01" * 1200))):
        alice.send(datagram, relay.address)
        assert await backend.recv() == (datagram, upstream)
        reply = rtp(ssrc=0x5EED, seq=seq)
        backend.send(reply, upstream)
        assert await alice.recv() == (reply, relay.address)


async def test_a_full_size_datagram_is_not_truncated(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    alice = await peers()
    upstream, _ = await call(relay, alice, backend, Session(port=backend.address[1]))
    big = rtp(payload=b"\x5a" * 60000)
    alice.send(big, relay.address)
    assert await backend.recv() == (big, upstream)


# --- drops --------------------------------------------------------------------------


async def test_unknown_sources_and_non_webrtc_bytes_are_dropped_and_counted(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    stranger = await peers()
    session = Session(port=backend.address[1])

    stranger.send(dtls_record(), relay.address)
    stranger.send(rtp(), relay.address)
    stranger.send(b"\x40\x01\x02\x03", relay.address)  # a TURN channel header
    tid = new_tid()
    stranger.send(session.check(tid), relay.address)

    request, _ = await backend.recv()  # the first thing to reach the backend is the check
    assert stun.parse(request).transaction_id == tid
    assert await relay.metric("rtclab_lb_drops_total", reason="unknown_source") == 2
    assert await relay.metric("rtclab_lb_drops_total", reason="not_webrtc") == 1


async def test_malformed_stun_is_counted_while_the_relay_keeps_serving(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    alice = await peers()
    session = Session(port=backend.address[1])

    alice.send(b"\x00\x01\x00\x04" + b"\x00" * 16, relay.address)  # bad cookie
    alice.send(session.check()[:-3], relay.address)  # truncated
    alice.send(b"\x01", relay.address)  # one byte
    upstream, _ = await call(relay, alice, backend, session)

    assert await relay.metric("rtclab_lb_drops_total", reason="malformed") == 3
    alice.send(rtp(), relay.address)
    assert await backend.recv() == (rtp(), upstream)
    health = await relay.admin.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"


async def test_bad_tokens_and_unknown_backends_are_dropped_and_counted(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    alice = await peers()
    port = backend.address[1]

    alice.send(Session(port=port, secret=b"forged").check(), relay.address)
    alice.send(Session(backend_id=3, port=port).check(), relay.address)
    await call(relay, alice, backend, Session(port=port))

    assert await relay.metric("rtclab_lb_drops_total", reason="bad_token") == 1
    assert await relay.metric("rtclab_lb_drops_total", reason="unknown_backend") == 1
    assert len(await relay.flows()) == 1


async def test_verify_integrity_refuses_a_check_with_a_bad_message_integrity(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay(verify_integrity=True)
    backend = await backend_at(peers)
    mallory = await peers()
    session = Session(port=backend.address[1])

    # Mallory saw the ufrag go by but does not know the session's password.
    mallory.send(session.check(password="guessed-password-000000"), relay.address)
    await call(relay, mallory, backend, session)  # with the real password it passes

    assert await relay.metric("rtclab_lb_drops_total", reason="bad_integrity") == 1
    assert len(await relay.flows()) == 1


# --- expiry ---------------------------------------------------------------------------


async def test_an_idle_flow_expires_and_its_upstream_socket_closes(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay(idle_timeout_s=0.2)
    backend = await backend_at(peers)
    alice = await peers()
    session = Session(port=backend.address[1])
    await call(relay, alice, backend, session)
    [flow] = await relay.flows()

    for _ in range(int(HANG_GUARD_S / 0.05)):
        if not await relay.flows():
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the idle flow never expired")
    assert relay.relay.upstream_address(flow["id"]) is None
    assert await relay.metric("rtclab_lb_flows_expired_total") == 1
    assert await relay.metric("rtclab_lb_flows") == 0

    # The address is unknown again until the next check opens a new flow.
    alice.send(rtp(), relay.address)
    second_upstream, _ = await call(relay, alice, backend, session)
    assert await relay.metric("rtclab_lb_drops_total", reason="unknown_source") == 1
    [again] = await relay.flows()
    assert again["id"] != flow["id"]
    assert again["upstream"] == format_hostport(second_upstream)


# --- rebind policies ---------------------------------------------------------------


async def test_rebind_off_leaves_a_moved_clients_downstream_on_the_old_address(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay(rebind=RebindPolicy.OFF)
    backend = await backend_at(peers)
    session = Session(port=backend.address[1])
    old_port, new_port = await peers(), await peers()  # the client before/after a NAT rebinding

    nominated, _ = await call(relay, old_port, backend, session)
    # The client's next consent check comes from its new port: a new flow, and
    # the backend sees it from a NEW peer address.
    second_peer, _ = await call(relay, new_port, backend, session)
    assert second_peer != nominated

    # The backend keeps sending media on the pair it nominated: it reaches the
    # old address, so the client at its new port hears nothing.
    backend.send(rtp(ssrc=99), nominated)
    assert await old_port.recv() == (rtp(ssrc=99), relay.address)
    assert new_port.nothing_received()

    flows = await relay.flows()
    assert sorted(flow["client"] for flow in flows) == sorted(
        format_hostport(peer.address) for peer in (old_port, new_port)
    )
    assert await relay.metric("rtclab_lb_rebinds_total", policy="off", trigger="new_flow") == 1


async def test_rebind_verified_moves_only_after_the_backends_success_with_the_same_tid(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay(rebind=RebindPolicy.VERIFIED)
    backend = await backend_at(peers)
    session = Session(port=backend.address[1])
    old_port, new_port = await peers(), await peers()
    nominated, _ = await call(relay, old_port, backend, session)
    backend.answer_checks = False  # from here the test answers by hand

    # A check from the new port reaches the backend from its usual peer.
    tid = new_tid()
    new_port.send(session.check(tid), relay.address)
    request, peer = await backend.recv()
    assert peer == nominated and stun.parse(request).transaction_id == tid

    # Not answered yet: downstream still goes to the old address.
    backend.send(rtp(seq=1), nominated)
    assert await old_port.recv() == (rtp(seq=1), relay.address)
    # A success for another transaction moves nothing.
    other = session.success(new_tid())
    backend.send(other, nominated)
    assert await old_port.recv() == (other, relay.address)
    assert (await relay.flows())[0]["client"] == format_hostport(old_port.address)

    # The success for the new port's check goes to the new port, and so does all that follows.
    answer = session.success(tid)
    backend.send(answer, nominated)
    assert await new_port.recv() == (answer, relay.address)
    backend.send(rtp(seq=2), nominated)
    assert await new_port.recv() == (rtp(seq=2), relay.address)
    assert old_port.nothing_received() and new_port.nothing_received()

    # Upstream from the new port flows on the same upstream socket.
    new_port.send(rtp(seq=3), relay.address)
    assert await backend.recv() == (rtp(seq=3), nominated)
    [flow] = await relay.flows()
    assert flow["client"] == format_hostport(new_port.address)
    assert (
        await relay.metric("rtclab_lb_rebinds_total", policy="verified", trigger="stun_success")
        == 1
    )


async def test_rebind_ssrc_moves_on_an_rtp_packet_with_the_clients_ssrc(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay(rebind=RebindPolicy.SSRC)
    backend = await backend_at(peers)
    session = Session(port=backend.address[1])
    old_port, new_port = await peers(), await peers()
    nominated, _ = await call(relay, old_port, backend, session)
    old_port.send(rtp(ssrc=0xABCD, seq=1), relay.address)
    assert await backend.recv() == (rtp(ssrc=0xABCD, seq=1), nominated)

    new_port.send(rtp(ssrc=0xABCD, seq=2), relay.address)
    assert await backend.recv() == (rtp(ssrc=0xABCD, seq=2), nominated)
    backend.send(rtp(ssrc=7), nominated)
    assert await new_port.recv() == (rtp(ssrc=7), relay.address)
    assert old_port.nothing_received()
    assert await relay.metric("rtclab_lb_rebinds_total", policy="ssrc", trigger="ssrc") == 1


# --- admin endpoints ---------------------------------------------------------------------


async def test_metrics_and_flows_describe_the_traffic(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    backend = await backend_at(peers)
    alice = await peers()
    session = Session(port=backend.address[1])
    upstream, _ = await call(relay, alice, backend, session)
    check_size = len(session.check())
    answer_size = len(session.success(new_tid(), upstream))
    dtls = dtls_record()
    alice.send(dtls, relay.address)
    await backend.recv()
    backend.send(rtp(), upstream)
    await alice.recv()

    metrics = await relay.metrics()

    def value(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert value("rtclab_lb_packets_total", direction="up", kind="stun") == 1
    assert value("rtclab_lb_packets_total", direction="up", kind="dtls") == 1
    assert value("rtclab_lb_packets_total", direction="down", kind="stun") == 1
    assert value("rtclab_lb_packets_total", direction="down", kind="rtp") == 1
    assert value("rtclab_lb_packets_total", direction="up", kind="rtp") == 0
    assert value("rtclab_lb_bytes_total", direction="up", kind="stun") == check_size
    assert value("rtclab_lb_bytes_total", direction="up", kind="dtls") == len(dtls)
    assert value("rtclab_lb_bytes_total", direction="down", kind="rtp") == len(rtp())
    assert value("rtclab_lb_flows") == 1
    assert value("rtclab_lb_flows_created_total") == 1
    assert value("rtclab_lb_flows_expired_total") == 0
    for reason in ("unknown_source", "bad_token", "unknown_backend", "malformed", "table_full"):
        assert value("rtclab_lb_drops_total", reason=reason) == 0

    [flow] = await relay.flows()
    assert flow == {
        "id": flow["id"],
        "client": format_hostport(alice.address),
        "backend_id": 1,
        "backend": format_hostport(backend.address),
        # The relay's end of the upstream socket: what the backend sees as its peer.
        "upstream": format_hostport(upstream),
        "server_ufrag": session.server_ufrag,
        "client_ufrag": "cli1",
        "created": flow["created"],
        "last_seen": flow["last_seen"],
        "packets_up": 2,
        "packets_down": 2,
        "bytes_up": check_size + len(dtls),
        "bytes_down": answer_size + len(rtp()),
    }
    assert 0 < flow["created"] <= flow["last_seen"]

    health = await (await relay.admin.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["listen"] == format_hostport(relay.address)
    assert health["flows"] == 1 and health["rebind"] == "off"
    assert health["backends"] == {"1": "127.0.0.1", "2": "127.0.0.2"}


# --- other paths ---------------------------------------------------------------------------


async def test_a_vanished_backend_counts_send_failures_and_other_flows_keep_working(
    start_relay: StartRelay, peers: OpenPeer
) -> None:
    relay = await start_relay()
    gone, alive = await backend_at(peers), await backend_at(peers)
    alice, bob = await peers(), await peers()
    await call(relay, alice, gone, Session(port=gone.address[1]))
    bob_upstream, _ = await call(
        relay, bob, alive, Session(port=alive.address[1], client_ufrag="b")
    )
    gone.close()  # the session's port now answers with ICMP port unreachable

    for _ in range(int(HANG_GUARD_S / 0.05)):
        alice.send(rtp(), relay.address)
        bob.send(rtp(), relay.address)
        assert await alive.recv() == (rtp(), bob_upstream)
        if await relay.metric("rtclab_lb_drops_total", reason="send_failed") > 0:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("no send failure was counted")


async def test_ipv6_clients_and_backends(start_relay: StartRelay, peers: OpenPeer) -> None:
    try:
        backend = await backend_at(peers, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    relay = await start_relay(listen=("::1", 0), backends={1: "::1"})
    alice = await peers(host="::1")
    upstream, _ = await call(relay, alice, backend, Session(port=backend.address[1]))
    backend.send(rtp(), upstream)
    assert await alice.recv() == (rtp(), relay.address)
    [flow] = await relay.flows()
    assert flow["client"] == f"[::1]:{alice.address[1]}"
    assert flow["upstream"] == f"[::1]:{upstream[1]}"
