"""Abuse of signaling's public API and the media servers' internal one, with real sockets:
``python -m lab.attacks.http_abuse``.

Against a running stack (real subprocesses), in order: slow clients
(slowloris: headers a byte at a time; a body that never finishes), oversized
bodies (with and without Content-Length), truncated bodies, failed offers
(malformed SDP), abandoned offers (valid offers whose callers never arrive,
and offers whose sender hangs up before the answer).  Each case records the
statuses it got and whether every error was the JSON error shape.  Then the
harness waits past the media server's setup timeout and reads the servers'
own /metrics: open files, sockets, tasks, peer connections and pending
setups must be back where they were before the first case.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import click

from lab.attacks.replay import git_commit
from lab.scenarios.observe import get_text
from lab.stack import Stack, StackConfig

RESULTS = Path(__file__).resolve().parents[2] / "reliability" / "http.json"
OFFER = Path(__file__).resolve().parents[2] / "tests" / "data" / "sdp" / "aiortc-1.16-offer.sdp"
SETUP_TIMEOUT_S = 3.0
KEEPALIVE_S = 15.0  # aiohttp's client connector default
GAUGES = {
    "fds": "rtclab_process_open_fds",
    "sockets": "rtclab_process_sockets",
    "tasks": "rtclab_asyncio_tasks",
    "threads": "rtclab_process_threads",
    "sessions": "rtclab_media_sessions",
    "pending_setups": "rtclab_media_pending_setups",
    "peer_connections": "rtclab_media_peer_connections",
}
# What must come back to its value before the abuse: the resources a leak holds.
MUST_RETURN = ("fds", "sockets", "tasks", "sessions", "pending_setups", "peer_connections")


def gauges(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        for short, name in GAUGES.items():
            if key == name:
                found[short] = float(value)
    return found


class Tally:
    """Statuses one case got, and how many errors were not the documented JSON."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.bad_errors = 0

    async def record(self, response: aiohttp.ClientResponse) -> None:
        self.statuses[str(response.status)] += 1
        if response.status >= 400:
            try:
                body = await response.json(content_type=None)
                ok = set(body) == {"error"} and set(body["error"]) == {"code", "message"}
            except (ValueError, aiohttp.ContentTypeError, TypeError):
                ok = False
            self.bad_errors += 0 if ok else 1

    def to_json(self) -> dict[str, Any]:
        return {"statuses": dict(sorted(self.statuses.items())), "non_json_errors": self.bad_errors}


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def slowloris(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """Many connections sending request headers one byte at a time; is anyone else served?"""
    head = b"POST /v1/calls HTTP/1.1\r\nHost: rtclab\r\nContent-Type: application/sdp\r\nX-Slow: "
    opened = await asyncio.gather(*(_open(url) for _ in range(connections)))
    for _, writer in opened:
        writer.write(head)
    served = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            for _, writer in opened:
                writer.write(b"a")
            async with http.get(f"{url}/healthz") as response:
                served += response.status == 200
            await asyncio.sleep(0.5)
    closed_by_server = sum(1 for reader, _ in opened if reader.at_eof())
    for _, writer in opened:
        writer.close()
    return {
        "connections": connections,
        "seconds": seconds,
        "healthz_answered_during": served,
        "closed_by_server": closed_by_server,
    }


async def slow_body(url: str, path: str, connections: int, seconds: float) -> dict[str, Any]:
    """Offers announced at 60,000 bytes, trickled a few bytes at a time, then dropped."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: rtclab\r\nContent-Type: application/sdp\r\n"
        "Content-Length: 60000\r\n\r\nv=0\r\n"
    ).encode()
    opened = await asyncio.gather(*(_open(url) for _ in range(connections)))
    for _, writer in opened:
        writer.write(head)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _, writer in opened:
            writer.write(b"a=x\r\n")
        await asyncio.sleep(0.5)
    for _, writer in opened:
        writer.close()
    return {"connections": connections, "seconds": seconds}


async def truncated(url: str, path: str, count: int) -> dict[str, Any]:
    """Bodies cut short: Content-Length 5,000, a hundred bytes sent, the connection closed."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: rtclab\r\nContent-Type: application/sdp\r\n"
        "Content-Length: 5000\r\n\r\n"
    ).encode()
    answered = 0
    for _ in range(count):
        reader, writer = await _open(url)
        writer.write(head + OFFER.read_bytes()[:100])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        answered += len(await reader.read()) > 0
    return {"count": count, "answered": answered}


async def oversized(http: aiohttp.ClientSession, url: str, count: int) -> dict[str, Any]:
    """1 MiB bodies, with Content-Length and chunked (no length announced)."""
    body = b"v=0\r\n" + b"a=x\r\n" * (1024 * 1024 // 5)
    with_length, chunked = Tally(), Tally()

    async def chunks() -> Any:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    for _ in range(count):
        headers = {"Content-Type": "application/sdp"}
        async with http.post(url, data=body, headers=headers) as response:
            await with_length.record(response)
        try:
            async with http.post(url, data=chunks(), headers=headers) as response:
                await chunked.record(response)
        except aiohttp.ClientError:
            # The server may answer 413 and close before the upload ends.
            chunked.statuses["closed_early"] += 1
    return {"count": count, "content_length": with_length.to_json(), "chunked": chunked.to_json()}


async def offers(
    http: aiohttp.ClientSession, url: str, body: bytes, count: int, concurrency: int
) -> dict[str, Any]:
    """``count`` offers, ``concurrency`` at a time; nobody ever connects to a session made."""
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with (
            gate,
            http.post(url, data=body, headers={"Content-Type": "application/sdp"}) as response,
        ):
            await tally.record(response)

    await asyncio.gather(*(one() for _ in range(count)))
    return {"count": count, "concurrency": concurrency, **tally.to_json()}


async def hung_up(url: str, path: str, count: int) -> dict[str, Any]:
    """Valid offers whose sender closes the connection before the answer comes."""
    body = OFFER.read_bytes()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: rtclab\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    for _ in range(count):
        _, writer = await _open(url)
        writer.write(head + body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    return {"count": count}


async def peak_pending(media_url: str, during: Awaitable[Any]) -> tuple[Any, float]:
    """Run ``during`` while polling the media server's pending setups; the result and the peak."""
    peak = 0.0
    task = asyncio.ensure_future(during)
    async with aiohttp.ClientSession() as http:
        while not task.done():
            found = gauges(await get_text(http, f"{media_url}/metrics") or "")
            peak = max(peak, found.get("pending_setups", 0.0))
            await asyncio.sleep(0.05)
    return await task, peak


_TCP_STATES = {"01": "established", "06": "time_wait", "07": "close", "08": "close_wait",
               "0A": "listen", "09": "last_ack", "04": "fin_wait1", "05": "fin_wait2"}  # fmt: skip


def sockets_of(pid: int) -> dict[str, int]:
    """A process's sockets by protocol and TCP state, from /proc (the same namespace)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    kinds: Counter[str] = Counter()
    for table in ("tcp", "tcp6", "udp", "udp6", "unix"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            inode = fields[6] if table == "unix" else fields[9]
            if inode in inodes:
                state = _TCP_STATES.get(fields[3], fields[3]) if table.startswith("tcp") else ""
                kinds[f"{table} {state}".strip()] += 1
                inodes.discard(inode)
    if inodes:
        kinds["other"] = len(inodes)
    return dict(sorted(kinds.items()))


def sockets_of_child(stack: Stack, name: str) -> dict[str, int]:
    process = stack.child(name).process
    return sockets_of(process.pid) if process is not None else {}


async def read_gauges(stack: Stack) -> dict[str, dict[str, float]]:
    async with aiohttp.ClientSession() as http:
        return {
            "signaling": gauges(await get_text(http, f"{stack.signaling_url}/metrics") or ""),
            "media": gauges(await get_text(http, f"{stack.media_url(0)}/metrics") or ""),
        }


async def run_abuse(*, scale: float = 1.0, log_dir: Path | None = None) -> dict[str, Any]:
    """Every case, in two rounds; ``scale`` shrinks the counts (the tests' short run)."""

    def n(count: int) -> int:
        return max(1, int(count * scale))

    config = StackConfig(
        media_servers=1,
        media_args=("--setup-timeout", str(SETUP_TIMEOUT_S)),
        log_dir=log_dir,
    )
    async with Stack(config) as stack, aiohttp.ClientSession() as http:
        signaling, media = stack.signaling_url, stack.media_url(0)
        # Warm up (one offer) so pools and lazy imports are in the baseline.
        await offers(http, f"{signaling}/v1/calls", OFFER.read_bytes(), 1, 1)
        await asyncio.sleep(SETUP_TIMEOUT_S + 2)
        before = await read_gauges(stack)
        # Twice: what the first round leaves may be bounded state (signaling's
        # keep-alive pool to the media server); a leak grows with the second.
        rounds: list[tuple[dict[str, Any], dict[str, dict[str, float]]]] = []
        socket_kinds: list[dict[str, int]] = [sockets_of_child(stack, "media-1")]
        for _ in range(2):
            cases = await abuse_round(http, signaling, media, n)
            await settle()
            rounds.append((cases, await read_gauges(stack)))
            socket_kinds.append(sockets_of_child(stack, "media-1"))
        async with http.get(f"{media}/healthz") as response:
            media_alive = response.status == 200
    (cases, middle), (_, after) = rounds
    growth = _difference(after, middle, MUST_RETURN)
    # Sessions, setups and peer connections have no pool: they must be gone outright.
    held = {
        key: after["media"].get(key, 0.0)
        for key in ("sessions", "pending_setups", "peer_connections")
    }
    return {
        "setup_timeout_s": SETUP_TIMEOUT_S,
        "max_pending_setups": 64,
        "cases": cases,
        "before": before,
        "after_first_round": middle,
        "after": after,
        "left_after_first_round": _difference(middle, before, MUST_RETURN),
        "growth_in_second_round": growth,
        "media_held_after": held,
        # The media server's sockets by protocol and state: before, after each round.
        "media_sockets": socket_kinds,
        "media_alive": media_alive,
        "ok": media_alive
        and all(value <= 0 for server in growth.values() for value in server.values())
        and not any(held.values()),
    }


def _difference(
    later: dict[str, dict[str, float]], earlier: dict[str, dict[str, float]], keys: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    return {
        server: {
            key: later[server].get(key, 0.0) - earlier[server].get(key, 0.0)
            for key in keys
            if key in earlier[server]
        }
        for server in earlier
    }


async def settle() -> None:
    """Past the setup timeout, and twice signaling's client keep-alive (15 s: its pool
    closes idle connections to the media server on a timer of that period)."""
    await asyncio.sleep(max(SETUP_TIMEOUT_S, 2 * KEEPALIVE_S) + 5)


async def abuse_round(
    http: aiohttp.ClientSession, signaling: str, media: str, n: Callable[[int], int]
) -> dict[str, Any]:
    calls = f"{signaling}/v1/calls"
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("slowloris_signaling", lambda: slowloris(signaling, n(200), 5.0)),
        ("slow_body_signaling", lambda: slow_body(signaling, "/v1/calls", n(100), 3.0)),
        ("slow_body_media", lambda: slow_body(media, "/sessions", n(100), 3.0)),
        ("oversized_signaling", lambda: oversized(http, calls, n(20))),
        ("oversized_media", lambda: oversized(http, f"{media}/sessions", n(20))),
        ("truncated_signaling", lambda: truncated(signaling, "/v1/calls", n(50))),
        ("truncated_media", lambda: truncated(media, "/sessions", n(50))),
        ("failed_offers", lambda: offers(http, calls, b"v=0\r\nnot an offer\r\n", n(1000), 16)),
        ("hung_up_offers", lambda: hung_up(signaling, "/v1/calls", n(100))),
    ]
    cases: dict[str, Any] = {}
    for name, step in steps:
        started = time.monotonic()
        cases[name] = await step()
        cases[name]["seconds"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    result, peak = await peak_pending(media, offers(http, calls, OFFER.read_bytes(), n(1000), 16))
    cases["abandoned_offers"] = {
        **result,
        "peak_pending_setups": peak,
        "seconds": round(time.monotonic() - started, 1),
    }
    return cases


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS,
    show_default=True,
    help="Where the results go.",
)
@click.option("--scale", type=click.FloatRange(0.01, 1.0), default=1.0, show_default=True,
              help="Shrink every case's count (1.0: the committed run).")  # fmt: skip
def main(out: Path, scale: float) -> None:
    """Slow, oversized, truncated, failed and abandoned requests against a running stack;
    then whether the servers let go of everything, by their own /metrics."""
    summary = asyncio.run(run_abuse(scale=scale))
    summary.update(
        commit=git_commit(),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        scale=scale,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    click.echo(
        json.dumps(
            {
                "left_after_first_round": summary["left_after_first_round"],
                "growth_in_second_round": summary["growth_in_second_round"],
                "ok": summary["ok"],
            }
        )
    )
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
