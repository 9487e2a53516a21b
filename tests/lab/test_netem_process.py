"""``python -m lab.netem`` as a real process: help, health, forwarding, clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys

import aiohttp

HANG_GUARD_S = 20.0  # a cold interpreter importing aiohttp on a busy machine


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.netem", "--help"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "--udp-listen",
        "--udp-upstream",
        "--tcp-listen",
        "--tcp-upstream",
        "--control",
        "--seed",
        "--direction",
        "--delay-ms",
        "--jitter-ms",
        "--loss",
        "--burst-loss",
        "--burst-length",
        "--rate-kbps",
        "--queue-limit-ms",
        "--blackhole",
        "--reorder",
        "--rebind-address-pool",
        "--mapping-idle-s",
        "--log-level",
        "--log-format",
    ):
        assert option in result.stdout


def test_bad_options_are_refused_before_anything_starts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.netem", "--rebind-address-pool", "127.0.0.9-127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 2
    assert "--rebind-address-pool" in result.stderr


async def test_serves_health_and_exits_cleanly_on_sigterm_mid_connection() -> None:
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    upstream_port = echo_transport.get_extra_info("sockname")[1]
    tcp_upstream = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    tcp_upstream_port = tcp_upstream.sockets[0].getsockname()[1]
    udp_port = _free_port(socket.SOCK_DGRAM)
    tcp_port = _free_port(socket.SOCK_STREAM)
    control_port = _free_port(socket.SOCK_STREAM)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lab.netem",
        "--udp-listen",
        f"127.0.0.1:{udp_port}",
        "--udp-upstream",
        f"127.0.0.1:{upstream_port}",
        "--tcp-listen",
        f"127.0.0.1:{tcp_port}",
        "--tcp-upstream",
        f"127.0.0.1:{tcp_upstream_port}",
        "--control",
        f"127.0.0.1:{control_port}",
        "--delay-ms",
        "10",
        "--direction",
        "up",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{control_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            health = None
            deadline = loop.time() + HANG_GUARD_S
            while health is None and loop.time() < deadline:
                try:
                    async with session.get(f"{url}/healthz") as response:
                        health = await response.json()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            assert health is not None, "never became healthy"
            assert health["status"] == "ok"
            assert health["udp"] == f"127.0.0.1:{udp_port}"
            async with session.get(f"{url}/state") as response:
                state = await response.json()
            assert state["impairments"]["up"]["delay_ms"] == 10
            assert state["impairments"]["down"]["delay_ms"] == 0
        # A connection with bytes in flight when the signal comes.
        _, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer.write(b"x" * 100_000)
        await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), HANG_GUARD_S)
        assert process.stderr is not None
        log_lines = (await process.stderr.read()).decode().splitlines()
        assert code == 0, "\n".join(log_lines)
        entries = [json.loads(line) for line in log_lines if line.startswith("{")]
        events = [entry["event"] for entry in entries]
        assert "netem ready" in events
        assert "netem stopped" in events
        assert [e for e in entries if e["level"] in ("error", "critical")] == []
        writer.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        echo_transport.close()
        tcp_upstream.close()
