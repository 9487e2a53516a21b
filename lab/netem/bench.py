"""Measure what the emulator itself adds: ``python -m lab.netem.bench``.

Starts ``python -m lab.netem`` as its own process (as scenarios run it) in
front of a UDP echo server, sends voice-like traffic through it from many
callers, and prints one JSON object: the round trip with and without the
emulator in the path, and the emulator's own account of itself (send lateness
and CPU, from ``GET /state``).  The generator shares the machine, so read the
emulator's CPU per packet as the fairer figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

import click

from lab.netem.client import NetemControl

_STAMP = struct.Struct("!Id")  # caller-local sequence number, send time


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class _Caller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.rtts_s: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        _, sent = _STAMP.unpack_from(data)
        self.rtts_s.append(time.monotonic() - sent)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _drive(
    target: tuple[str, int], pps: int, seconds: float, callers: int, size: int
) -> dict[str, Any]:
    """Send ``pps`` datagrams/s for ``seconds`` round-robin from ``callers`` sockets."""
    loop = asyncio.get_running_loop()
    endpoints = []
    for _ in range(callers):
        _, caller = await loop.create_datagram_endpoint(_Caller, local_addr=("127.0.0.1", 0))
        endpoints.append(caller)
    padding = b"\x80" * max(0, size - _STAMP.size)  # looks like RTP to a first-byte classifier
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * pps)
        while sent < due:
            caller = endpoints[sent % callers]
            caller.transport.sendto(_STAMP.pack(sent, time.monotonic()) + padding, target)
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.5)  # the last replies
    rtts = [rtt for caller in endpoints for rtt in caller.rtts_s]
    for caller in endpoints:
        caller.transport.close()
    return {
        "sent": sent,
        "received": len(rtts),
        "rtt_us": {
            "p50": round(_quantile(rtts, 0.5) * 1e6, 1),
            "p99": round(_quantile(rtts, 0.99) * 1e6, 1),
        },
    }


async def _bench(
    pps: int, seconds: float, callers: int, size: int, delay_ms: float, event_loop: str
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    echo = echo_transport.get_extra_info("sockname")[:2]
    direct = await _drive(echo, pps, min(seconds, 3.0), callers, size)

    udp_port, control_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lab.netem",
        "--udp-listen", f"127.0.0.1:{udp_port}",
        "--udp-upstream", f"127.0.0.1:{echo[1]}",
        "--control", f"127.0.0.1:{control_port}",
        "--delay-ms", str(delay_ms),
        "--log-level", "WARNING",
        "--event-loop", event_loop,
    )  # fmt: skip
    control = NetemControl(f"http://127.0.0.1:{control_port}")
    try:
        deadline = loop.time() + 20
        while not await control.healthy():
            if loop.time() > deadline or process.returncode is not None:
                raise RuntimeError("the emulator did not start")
            await asyncio.sleep(0.1)
        through = await _drive(("127.0.0.1", udp_port), pps, seconds, callers, size)
        state = await control.state()
    finally:
        await control.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
        echo_transport.close()
    added = {
        q: round(through["rtt_us"][q] - direct["rtt_us"][q] - 2 * delay_ms * 1000, 1)
        for q in ("p50", "p99")
    }
    return {
        "pps": pps,
        "seconds": seconds,
        "callers": callers,
        "payload_bytes": size,
        "delay_ms_each_way": delay_ms,
        "event_loop": event_loop,
        "cpus": os.cpu_count(),
        "direct": direct,
        "through_emulator": through,
        "added_rtt_us_beyond_configured_delay": added,
        "emulator": state["overhead"],
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--pps",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Datagrams per second sent towards the echo server (each comes back).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0.5),
    default=10.0,
    show_default=True,
    help="How long to send through the emulator.",
)
@click.option(
    "--callers",
    type=click.IntRange(1),
    default=40,
    show_default=True,
    help="Caller sockets (mappings); 40 x 50 pps is forty 20 ms voice streams.",
)
@click.option(
    "--payload-bytes",
    type=click.IntRange(_STAMP.size),
    default=160,
    show_default=True,
    help="Datagram size (an Opus 20 ms frame is ~100-200 bytes).",
)
@click.option(
    "--delay-ms",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="One-way delay the emulator adds each way, so its timers are exercised.",
)
@click.option(
    "--event-loop",
    type=click.Choice(["asyncio", "uvloop"]),
    default="asyncio",
    show_default=True,
    help="The emulator's event loop (see `rtclab netem --help`).",
)
def main(
    pps: int, seconds: float, callers: int, payload_bytes: int, delay_ms: float, event_loop: str
) -> None:
    """Print the emulator's self-overhead at a given packet rate as JSON."""
    result = asyncio.run(_bench(pps, seconds, callers, payload_bytes, delay_ms, event_loop))
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
