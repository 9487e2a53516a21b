"""Capture what real clients send, as fuzzing seeds: ``python -m lab.capture``.

Starts the stack (one media server, the relay, signaling) and puts two taps
in front of it: a UDP tap the media server's answer names as the relay
(every datagram a client sends, and every one it is sent, passes through it
and is recorded), and an HTTP tap in front of signaling that records each
offer and answer.  Then it places one short call with every client that can
run here (aiortc, Chromium, FFmpeg WHIP, the Node stacks) and writes, per
client, the first few datagrams of each kind and direction and its offer and
answer into the fuzz corpus (fuzz/corpus/KIND/), with a README saying where
each came from.  The stack signs route tokens with the fuzz seed secret, so
the captured checks carry tokens the relay target accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import shutil
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import aiohttp
import click
from aiohttp import web

from fuzz.target import ROOT, SEED_SECRET
from lab.callers.drivers import DRIVERS, driver
from lab.stack import LOOPBACK, Stack, StackConfig, free_port
from wire.addr import Address
from wire.demux import classify

log = logging.getLogger("rtclab.capture")

# Per client, direction and kind: enough to hold a handshake (STUN checks and
# answers, DTLS flights) without keeping seconds of audio.
KEEP_PER_KIND = {"stun": 8, "dtls": 8, "rtp": 3, "rtcp": 3}


@dataclass
class Capture:
    """What one client's call put on the wire, in order."""

    client: str = ""
    datagrams: list[tuple[str, bytes]] = field(default_factory=list)  # (direction, bytes)
    sdp: list[tuple[str, bytes]] = field(default_factory=list)  # ("offer" | "answer", text)

    def record(self, direction: str, data: bytes) -> None:
        if self.client:
            self.datagrams.append((direction, data))


class UdpTap(asyncio.DatagramProtocol):
    """A transparent UDP hop: one upstream socket per client address, both ways recorded."""

    def __init__(self, upstream: Address, capture: Capture) -> None:
        self.upstream = upstream
        self.capture = capture
        self.transport: asyncio.DatagramTransport | None = None
        self._towards: dict[Address, asyncio.DatagramTransport] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        client = (addr[0], addr[1])
        self.capture.record("up", data)
        upstream = self._towards.get(client)
        if upstream is None:
            asyncio.get_running_loop().create_task(self._open(client, data))
        else:
            upstream.sendto(data)

    async def _open(self, client: Address, first: bytes) -> None:
        tap = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                tap.capture.record("down", data)
                if tap.transport is not None:
                    tap.transport.sendto(data, client)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            Back, remote_addr=self.upstream, local_addr=(LOOPBACK, 0)
        )
        self._towards[client] = transport
        transport.sendto(first)

    def close(self) -> None:
        for transport in self._towards.values():
            transport.close()
        if self.transport is not None:
            self.transport.close()


def http_tap(signaling: str, capture: Capture) -> web.Application:
    """Forward every request to signaling as is; record SDP bodies both ways."""

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        if request.method == "POST" and request.content_type == "application/sdp":
            capture.sdp.append(("offer", body))
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method, signaling + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            answer = await upstream.read()
            if upstream.content_type == "application/sdp":
                capture.sdp.append(("answer", answer))
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return web.Response(status=upstream.status, body=answer, headers=passed)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def keep(capture: Capture) -> dict[str, list[tuple[str, bytes]]]:
    """The datagrams to keep, by kind: the first few of each kind and direction."""
    kept: dict[str, list[tuple[str, bytes]]] = {}
    counts: Counter[tuple[str, str]] = Counter()
    seen: set[bytes] = set()
    for direction, data in capture.datagrams:
        kind = classify(data).value
        if kind not in KEEP_PER_KIND or data in seen:
            continue
        if counts[direction, kind] >= KEEP_PER_KIND[kind]:
            continue
        counts[direction, kind] += 1
        seen.add(data)
        kept.setdefault(kind, []).append((f"{capture.client}-{direction}-{kind}", data))
    return kept


def write(captures: list[Capture], corpus: Path, versions: dict[str, str]) -> dict[str, Any]:
    manifest: dict[str, Any] = {"clients": {}, "versions": versions}
    for capture in captures:
        files: list[str] = []
        for kind, items in keep(capture).items():
            (corpus / kind).mkdir(parents=True, exist_ok=True)
            numbers: Counter[str] = Counter()
            for stem, data in items:
                numbers[stem] += 1
                name = f"{kind}/{stem}-{numbers[stem]}.bin"
                (corpus / name).write_bytes(data)
                files.append(name)
        for number, (role, text) in enumerate(capture.sdp, start=1):
            (corpus / "sdp").mkdir(parents=True, exist_ok=True)
            name = f"sdp/{capture.client}-{role}-{number}.sdp"
            (corpus / name).write_bytes(text)
            files.append(name)
        by_kind = Counter(classify(d).value for _, d in capture.datagrams)
        manifest["clients"][capture.client] = {
            "datagrams_seen": dict(sorted(by_kind.items())),
            "files": sorted(files),
        }
    (corpus / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def client_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("aiortc", "aioice", "imageio-ffmpeg", "playwright"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    for binary in ("chromium", "node"):
        path = shutil.which(binary)
        if path is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                printed = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=30
                ).stdout
                versions[binary] = printed.strip().splitlines()[0] if printed.strip() else "?"
    lock = ROOT / "lab" / "callers" / "node" / "package-lock.json"
    if lock.exists():
        packages = json.loads(lock.read_text()).get("packages", {})
        for name in ("@roamhq/wrtc", "werift", "node-datachannel"):
            entry = packages.get(f"node_modules/{name}")
            if entry:
                versions[name] = entry.get("version", "?")
    return versions


async def capture_all(clients: list[str], corpus: Path, seconds: float) -> dict[str, Any]:
    capture = Capture()
    tap_port = free_port()
    udp_tap_port = free_port(socket.SOCK_DGRAM)
    config = StackConfig(
        media_servers=1,
        rebind="verified",
        secret=SEED_SECRET.decode(),
        media_args=("--relay", f"{LOOPBACK}:{udp_tap_port}"),
    )
    captures: list[Capture] = []
    async with Stack(config) as stack:
        loop = asyncio.get_running_loop()
        transport, tap = await loop.create_datagram_endpoint(
            lambda: UdpTap(stack.relay_address, capture), local_addr=(LOOPBACK, udp_tap_port)
        )
        runner = web.AppRunner(http_tap(stack.signaling_url, capture))
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, tap_port).start()
        try:
            for name in clients:
                client = driver(name)
                why = client.unavailable()
                if why is not None:
                    log.warning("skipped", extra={"client": name, "reason": why})
                    click.echo(f"{name}: skipped ({why})", err=True)
                    continue
                capture.client, capture.datagrams, capture.sdp = name, [], []
                offer_url = f"http://{LOOPBACK}:{tap_port}/v1/calls"
                result = await client.call(offer_url, seconds=seconds)
                click.echo(
                    f"{name}: call {'ok' if result.get('ok') else result.get('error')}, "
                    f"{len(capture.datagrams)} datagrams, {len(capture.sdp)} SDP bodies",
                    err=True,
                )
                captures.append(Capture(name, list(capture.datagrams), list(capture.sdp)))
                capture.client = ""
        finally:
            await runner.cleanup()
            tap.close()
            transport.close()
    return write(captures, corpus, client_versions())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--client",
    "clients",
    multiple=True,
    type=click.Choice(list(DRIVERS)),
    help="A client to capture (repeatable) [default: every one that can run here].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "fuzz" / "corpus",
    show_default=True,
    help="The corpus directory (one subdirectory per kind).",
)
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Talk time per call.")
def main(clients: tuple[str, ...], out: Path, seconds: float) -> None:
    """Capture datagrams and SDP from real clients on loopback, as fuzzing seeds."""
    logging.basicConfig(level=logging.WARNING)
    manifest = asyncio.run(capture_all(list(clients) or list(DRIVERS), out, seconds))
    for client, entry in manifest["clients"].items():
        click.echo(f"{client}: {len(entry['files'])} files kept")


if __name__ == "__main__":
    main()
