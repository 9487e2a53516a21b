"""The emulator on real loopback sockets: UDP through a NAT-like hop, TCP proxying, control API.

Timing assertions are properties of the settings (an RTT is at least twice the
one-way delay), never upper speed limits; timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from lab.netem.client import NetemControl, NetemControlError
from lab.netem.control import EMULATOR, create_app
from lab.netem.core import LinkConfig
from lab.netem.emulator import Emulator, NetemConfig
from wire import stun
from wire.addr import Address, canonical, format_hostport

HANG_GUARD_S = 5.0
QUIET_S = 0.3  # how long "nothing more arrives" is watched for


# --- UDP endpoints ------------------------------------------------------------------


@dataclass
class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives, with arrival times."""

    echo: bool = False
    received: asyncio.Queue[tuple[bytes, Address, float]] = field(default_factory=asyncio.Queue)
    sources: list[Address] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source = canonical(addr)
        self.sources.append(source)
        self.received.put_nowait((data, source, time.monotonic()))
        if self.echo:
            assert self.transport is not None
            self.transport.sendto(data, addr)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        return canonical(self.transport.get_extra_info("sockname"))

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def next(self, timeout_s: float = HANG_GUARD_S) -> tuple[bytes, Address, float]:
        return await asyncio.wait_for(self.received.get(), timeout_s)

    async def collect(self, count: int, timeout_s: float = HANG_GUARD_S) -> list[bytes]:
        """Exactly ``count`` datagrams (fails if fewer arrive within the hang guard)."""
        return [(await self.next(timeout_s))[0] for _ in range(count)]

    async def drain(self, quiet_s: float = QUIET_S) -> list[bytes]:
        """Everything that arrives until nothing has for ``quiet_s``."""
        got: list[bytes] = []
        while True:
            try:
                data, _, _ = await asyncio.wait_for(self.received.get(), quiet_s)
            except TimeoutError:
                return got
            got.append(data)


@pytest.fixture
async def endpoints() -> AsyncIterator[Callable[..., Awaitable[Endpoint]]]:
    opened: list[Endpoint] = []

    async def open_endpoint(echo: bool = False, host: str = "127.0.0.1") -> Endpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: Endpoint(echo=echo), local_addr=(host, 0)
        )
        assert endpoint.transport is not None
        # Bursts of a few hundred datagrams must wait in the kernel, not overflow it,
        # while a loaded machine keeps this loop from reading (the default buffer holds
        # about 200 small datagrams).  FORCE needs CAP_NET_ADMIN, as in the test namespace.
        sock = endpoint.transport.get_extra_info("socket")
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                    break
        opened.append(endpoint)
        return endpoint

    yield open_endpoint
    for endpoint in opened:
        if endpoint.transport is not None:
            endpoint.transport.close()


# --- the emulator under test ------------------------------------------------------------


@dataclass
class Running:
    http: TestClient[Any, Any]
    emulator: Emulator
    control: NetemControl

    @property
    def udp(self) -> Address:
        return self.emulator.udp_address

    @property
    def tcp(self) -> Address:
        return self.emulator.tcp_address


StartNetem = Callable[..., Awaitable[Running]]


@pytest.fixture
async def netem(aiohttp_client: AiohttpClient) -> AsyncIterator[StartNetem]:
    """``await netem(upstream, **config)``: the emulator's app, started, with a control client."""
    controls: list[NetemControl] = []

    async def start(udp_upstream: Address, **overrides: Any) -> Running:
        config = NetemConfig(udp_listen=("127.0.0.1", 0), udp_upstream=udp_upstream, **overrides)
        http = await aiohttp_client(create_app(config))
        control = NetemControl(str(http.make_url("")))
        controls.append(control)
        return Running(http, http.app[EMULATOR], control)

    yield start
    for control in controls:
        await control.close()


async def ping(caller: Endpoint, to: Address, payload: bytes) -> float:
    """Round trip time of one datagram through the emulator and the echo upstream."""
    sent = time.monotonic()
    caller.send(payload, to)
    data, _, arrived = await caller.next()
    assert data == payload
    return arrived - sent


# --- UDP ---------------------------------------------------------------------------------


async def test_datagrams_cross_through_a_per_caller_mapping(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address)
    first, second = await endpoints(), await endpoints()
    for i in range(3):
        await ping(first, running.udp, b"first %d" % i)
        await ping(second, running.udp, b"second %d" % i)
    state = await running.control.state()
    mappings = {m["caller"]: m for m in state["udp"]["mappings"]}
    assert set(mappings) == {format_hostport(first.address), format_hostport(second.address)}
    outbound = {m["outbound"] for m in mappings.values()}
    # The upstream sees the mappings' addresses, one per caller, never the callers'.
    assert {format_hostport(s) for s in upstream.sources} == outbound
    assert len(outbound) == 2
    assert all(m["packets_up"] == m["packets_down"] == 3 for m in mappings.values())
    # And replies come back from the emulator's public address.
    first.send(b"x", running.udp)
    _, source, _ = await first.next()
    assert source == running.udp


async def test_delay_shows_in_the_round_trip(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, up=LinkConfig(delay_ms=30))
    caller = await endpoints()
    await running.control.impair("down", delay_ms=20)
    rtts = [await ping(caller, running.udp, b"%d" % i) for i in range(5)]
    assert min(rtts) >= 0.050
    overhead = (await running.control.state())["overhead"]
    assert overhead["lateness_us"]["udp"]["count"] == 10  # every send, both ways
    assert overhead["lateness_us"]["tcp"]["count"] == 0


async def test_loss_drops_about_the_configured_share(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, up=LinkConfig(loss=0.3))
    caller = await endpoints()
    for i in range(400):
        caller.send(b"%d" % i, running.udp)
        if i % 50 == 0:
            await asyncio.sleep(0.001)  # let the loop read, so no kernel buffer overflows
    # Count against the emulator's own numbers once it has seen all 400, rather than
    # waiting for a quiet spell (which a loaded machine can fake).
    for _ in range(int(HANG_GUARD_S / 0.05)):
        counters = (await running.control.state())["counters"]
        up = counters["up"]["udp"]
        if up["loss"] + up["delivered"] == 400:
            break
        await asyncio.sleep(0.05)
    assert up["loss"] + up["delivered"] == 400
    assert 0.6 * 400 < up["delivered"] < 0.8 * 400
    # What was delivered is echoed and comes back over the loss-free downlink, all of it.
    replies = await caller.collect(up["delivered"])
    assert await caller.drain() == []
    assert sorted(replies) == sorted(set(replies))


@pytest.mark.parametrize("mode", ["port", "address"])
async def test_a_rebind_moves_the_source_and_strands_the_old_address(
    mode: str, netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, rebind_pool="127.0.0.7-127.0.0.9")
    caller = await endpoints()
    await ping(caller, running.udp, b"before")
    old = upstream.sources[-1]

    [moved] = await running.control.rebind(mode, format_hostport(caller.address))
    assert moved["caller"] == format_hostport(caller.address)
    assert moved["old"] == format_hostport(old)
    await ping(caller, running.udp, b"after")
    new = upstream.sources[-1]
    assert moved["new"] == format_hostport(new)
    assert new != old
    if mode == "port":
        assert new[0] == old[0]
    else:
        assert new[0] == "127.0.0.7"

    # What the upstream still sends to the old address is lost, as for a moved client;
    # the new address works.
    assert upstream.transport is not None
    upstream.transport.sendto(b"to the old address", old)
    upstream.transport.sendto(b"to the new address", new)
    assert await caller.drain() == [b"to the new address"]
    state = await running.control.state()
    assert state["udp"]["mappings"][0]["outbound"] == format_hostport(new)
    assert state["udp"]["counters"]["rebinds"][mode] == 1


async def test_rebinding_everyone_and_refusals(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, rebind_pool="127.0.0.5")
    callers = [await endpoints(), await endpoints()]
    for caller in callers:
        await ping(caller, running.udp, b"hello")
    moved = await running.control.rebind("address")
    assert sorted(m["caller"] for m in moved) == sorted(format_hostport(c.address) for c in callers)
    assert {m["new"].split(":")[0] for m in moved} == {"127.0.0.5"}
    for caller in callers:
        await ping(caller, running.udp, b"still works")

    with pytest.raises(NetemControlError) as unknown:
        await running.control.rebind("port", "127.0.0.1:1")
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_caller")
    with pytest.raises(NetemControlError) as exhausted:  # already on the pool's only address
        await running.control.rebind("address")
    assert exhausted.value.status == 409
    with pytest.raises(NetemControlError) as bad_mode:
        await running.control.rebind("teleport")
    assert bad_mode.value.status == 400


async def test_idle_mappings_expire_like_a_nat(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, mapping_idle_s=0.2)
    caller = await endpoints()
    await ping(caller, running.udp, b"hello")
    first_source = upstream.sources[-1]
    await asyncio.sleep(0.5)
    state = await running.control.state()
    assert state["udp"]["mappings"] == []
    assert state["udp"]["counters"]["mappings_expired"] == 1
    await ping(caller, running.udp, b"again")  # a new mapping, a new outbound socket
    assert upstream.sources[-1] != first_source


# --- control while traffic flows ------------------------------------------------------------


async def test_impairments_change_while_traffic_flows(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address)
    caller = await endpoints()
    stop = asyncio.Event()

    async def talk() -> None:
        i = 0
        while not stop.is_set():
            caller.send(b"%d" % i, running.udp)
            i += 1
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(talk())
    try:
        await caller.next()  # flowing
        await running.control.impair("down", blackhole=True)
        await asyncio.sleep(0.05)  # replies already on their way may still land
        while not caller.received.empty():
            caller.received.get_nowait()
        await asyncio.sleep(0.3)
        assert caller.received.empty()  # the downlink is a blackhole
        lifted = await running.control.impair("down", blackhole=False)
        assert lifted["down"]["blackhole"] is False
        await caller.next()  # and it flows again
        impairments = await running.control.impair("up", delay_ms=25)
        assert impairments["up"]["delay_ms"] == 25
        assert impairments["down"]["delay_ms"] == 0
    finally:
        stop.set()
        await sender
    counters = (await running.control.state())["counters"]
    assert counters["down"]["udp"]["blackhole"] > 0
    assert counters["up"]["udp"]["blackhole"] == 0


async def test_control_api_refuses_bad_impairments_with_json_errors(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address)
    response = await running.http.post("/impair", json={"loss": 3})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "bad_impairment"
    assert "loss" in body["error"]["message"]
    response = await running.http.post("/impair", data=b"{not json")
    assert response.status == 400
    with pytest.raises(NetemControlError):
        await running.control.impair(burst={"p": 0.5})
    state = await running.control.state()
    assert state["impairments"]["up"] == state["impairments"]["down"]
    assert state["impairments"]["up"]["loss"] == 0.0  # nothing changed


async def test_health_and_metrics(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address, up=LinkConfig(loss=1.0))
    caller = await endpoints()
    caller.send(b"lost", running.udp)
    await asyncio.sleep(0.05)
    assert await running.control.healthy()
    health = await (await running.http.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["udp"] == format_hostport(running.udp)
    text = await (await running.http.get("/metrics")).text()
    assert 'rtclab_netem_packets_total{direction="up",outcome="loss",transport="udp"} 1.0' in text
    assert 'rtclab_netem_loss_ratio{direction="up"} 1.0' in text
    assert 'rtclab_netem_lateness_seconds_count{transport="udp"} 0.0' in text
    assert "rtclab_netem_cpu_seconds_total" in text
    assert "rtclab_netem_mappings 1.0" in text


# --- TCP ------------------------------------------------------------------------------------


async def _upstream_http(aiohttp_server: AiohttpServer) -> TestServer:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application(client_max_size=4 * 1024**2)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    return await aiohttp_server(app)


def _fresh_session() -> aiohttp.ClientSession:
    # A new TCP connection per request, so each pays the handshake.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=HANG_GUARD_S),
    )


async def test_tcp_hop_proxies_http_with_the_delay_applied(
    netem: StartNetem,
    endpoints: Callable[..., Awaitable[Endpoint]],
    aiohttp_server: AiohttpServer,
) -> None:
    server = await _upstream_http(aiohttp_server)
    upstream = await endpoints(echo=True)
    running = await netem(
        upstream.address,
        tcp_listen=("127.0.0.1", 0),
        tcp_upstream=("127.0.0.1", server.port),
        up=LinkConfig(delay_ms=20),
        down=LinkConfig(delay_ms=20),
    )
    url = f"http://{format_hostport(running.tcp)}"
    async with _fresh_session() as session:
        started = time.monotonic()
        async with session.get(f"{url}/hello") as response:
            assert await response.text() == "hello"
        elapsed = time.monotonic() - started
    # The handshake's round trip, then the request's: two round trips of 40 ms.
    assert elapsed >= 0.080
    state = await running.control.state()
    assert state["tcp"]["counters"]["connections_opened"] == 1
    assert state["counters"]["up"]["tcp"]["delivered"] >= 1
    assert state["overhead"]["lateness_us"]["tcp"]["count"] >= 2  # a chunk each way at least


async def test_tcp_keeps_every_byte_in_order_under_jitter_and_loss(
    netem: StartNetem,
    endpoints: Callable[..., Awaitable[Endpoint]],
    aiohttp_server: AiohttpServer,
) -> None:
    server = await _upstream_http(aiohttp_server)
    upstream = await endpoints(echo=True)
    running = await netem(
        upstream.address,
        tcp_listen=("127.0.0.1", 0),
        tcp_upstream=("127.0.0.1", server.port),
        up=LinkConfig(jitter_ms=3, loss=0.02),
        down=LinkConfig(jitter_ms=3, loss=0.02),
    )
    body = bytes(range(256)) * 1200  # ~300 KB, ~200 segments each way
    async with (
        _fresh_session() as session,
        session.post(f"http://{format_hostport(running.tcp)}/echo", data=body) as response,
    ):
        assert await response.read() == body
    state = await running.control.state()
    assert state["tcp"]["counters"]["retransmissions"] > 0  # loss held chunks, lost nothing


async def test_a_tcp_blackhole_stalls_and_then_delivers(
    netem: StartNetem,
    endpoints: Callable[..., Awaitable[Endpoint]],
    aiohttp_server: AiohttpServer,
) -> None:
    server = await _upstream_http(aiohttp_server)
    upstream = await endpoints(echo=True)
    running = await netem(
        upstream.address,
        tcp_listen=("127.0.0.1", 0),
        tcp_upstream=("127.0.0.1", server.port),
        up=LinkConfig(blackhole=True),
    )
    async with _fresh_session() as session:
        started = time.monotonic()
        request = asyncio.create_task(session.get(f"http://{format_hostport(running.tcp)}/hello"))
        await asyncio.sleep(0.3)
        assert not request.done()  # held, not failed
        await running.control.impair("up", blackhole=False)
        async with await request as response:
            assert await response.text() == "hello"
        assert time.monotonic() - started >= 0.3


async def test_tcp_to_a_closed_upstream_closes_the_caller(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    with_nothing_listening = await endpoints()  # a UDP port: nothing listens on TCP there
    running = await netem(
        upstream.address,
        tcp_listen=("127.0.0.1", 0),
        tcp_upstream=with_nothing_listening.address,
    )
    reader, writer = await asyncio.open_connection(*running.tcp)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), HANG_GUARD_S) == b""
    writer.close()
    state = await running.control.state()
    assert state["tcp"]["counters"]["connect_failures"] == 1


async def test_the_stun_record_shows_each_message_both_ways_and_the_address_it_left_from(
    netem: StartNetem, endpoints: Callable[..., Awaitable[Endpoint]]
) -> None:
    upstream = await endpoints(echo=True)
    running = await netem(upstream.address)
    caller = await endpoints()
    check = stun.build(
        stun.Method.BINDING,
        stun.MessageClass.REQUEST,
        bytes(12),
        [(stun.Attr.USERNAME, "server:client"), (stun.Attr.USE_CANDIDATE, None)],
    )
    await ping(caller, running.udp, check)
    await ping(caller, running.udp, b"\x80\x6f" + bytes(20))  # RTP: not recorded
    (moved,) = await running.control.rebind("port")
    await ping(caller, running.udp, check)
    record = await running.control.stun()
    assert record is not None
    (entries,) = record["callers"].values()
    # Up from the caller, then the echo down to it; after the rebind through the new socket.
    assert [entry[1:5] for entry in entries] == [
        ["up", "request", 1, True],
        ["down", "request", 1, True],
        ["up", "request", 1, True],
        ["down", "request", 1, True],
    ]
    assert [entry[5] for entry in entries] == [moved["old"]] * 2 + [moved["new"]] * 2
