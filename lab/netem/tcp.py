"""The TCP hop: a byte proxy from callers to the upstream (signaling), through the path.

It carries any protocol (HTTP is not parsed).  Each connection is a flow of the
path model and its bytes move in chunks of at most one segment:

- delay, jitter and rate apply per chunk, in order: a chunk is written only
  after the one before it, so jitter never reorders a byte stream;
- loss and blackhole do **not** drop bytes.  A TCP sender would retransmit, so a
  "lost" chunk is offered again after a retransmission timeout (the path's
  round trip plus Linux's 200 ms minimum, doubling per failed try, capped):
  loss shows as added latency and a blackhole as a stall that ends when the
  blackhole is lifted.  The whole stream waits behind the held chunk, which is
  TCP's head-of-line blocking;
- the kernel accepts the caller's connection at once, so the handshake's round
  trip (SYN up, SYN-ACK down) is charged before the first chunk upstream.  A
  caller that reuses its connection pays it once, as it would.

Each direction is a reader task and a writer task joined by a bounded queue, so
a slow reader on one side holds back the other side's socket (back-pressure),
and nothing is buffered without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.netem.core import Deliver, Link, PathModel
from wire.addr import Address, canonical, format_hostport

log = logging.getLogger("rtclab.netem")

SEGMENT_BYTES = 1448  # an Ethernet MSS with timestamps: one chunk is one segment's worth
_RTO_MIN_S = 0.2  # Linux's TCP_RTO_MIN
_RTO_MAX_S = 3.2  # enough doublings to stall visibly, not so many that a lab run hangs
_WINDOW_CHUNKS = 256  # ~370 KB in flight per direction: far above what signaling needs


@dataclass
class TcpCounters:
    connections_opened: int = 0
    connections_open: int = 0
    connect_failures: int = 0  # the upstream refused or was unreachable
    retransmissions: int = 0  # chunks held and offered again (loss, queue or blackhole)


class TcpHop:
    def __init__(
        self,
        model: PathModel,
        upstream: Address,
        record_lateness: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self.upstream = upstream
        self._record_lateness = record_lateness
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.counters = TcpCounters()
        self.listen_address: Address | None = None

    async def start(self, listen: Address) -> Address:
        self._server = await asyncio.start_server(
            self._serve, listen[0], listen[1], reuse_address=True
        )
        self.listen_address = canonical(self._server.sockets[0].getsockname())
        return self.listen_address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        accepted = self._clock()
        flow = self._model.open_flow("tcp")
        counters = self.counters
        counters.connections_opened += 1
        counters.connections_open += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                counters.connect_failures += 1
                log.warning(
                    "upstream connect failed",
                    extra={"upstream": format_hostport(self.upstream), "error": str(exc)},
                )
                return
            first_chunk_after = accepted + self._model.handshake_s()
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self._pipe(client_reader, upstream_writer, flow.up, first_chunk_after)
                )
                group.create_task(self._pipe(upstream_reader, client_writer, flow.down, None))
        except* OSError:
            pass  # a reset or a vanished peer ends the connection; nothing to report
        except* asyncio.CancelledError:
            # Only close() cancels these tasks.  Ending normally keeps Python 3.11's
            # start_server callback from logging the cancellation as an error.
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
            counters.connections_open -= 1
            self._connections.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        not_before: float | None,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_WINDOW_CHUNKS)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._carry(reader, link, queue, not_before))
            group.create_task(self._deliver(writer, queue))

    async def _carry(
        self,
        reader: asyncio.StreamReader,
        link: Link,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        not_before: float | None,
    ) -> None:
        if not_before is not None:
            await self._sleep_until(not_before)
        while data := await reader.read(SEGMENT_BYTES):
            rto_s = self._model.handshake_s() + _RTO_MIN_S
            while True:
                verdict = link.offer(len(data), self._clock())
                if isinstance(verdict, Deliver):
                    break
                self.counters.retransmissions += 1
                await asyncio.sleep(rto_s)
                rto_s = min(rto_s * 2, _RTO_MAX_S)
            await queue.put((verdict.at, data))
        await queue.put(None)

    async def _deliver(
        self, writer: asyncio.StreamWriter, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        while (item := await queue.get()) is not None:
            at, data = item
            await self._sleep_until(at)
            self._record_lateness(self._clock() - at)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()  # pass the half-close on; the other direction may go on

    async def _sleep_until(self, at: float) -> None:
        # A loop may wake a little early (uvloop rounds timers to milliseconds).
        while (wait_s := at - self._clock()) > 0:  # noqa: ASYNC110 - waiting on a clock
            await asyncio.sleep(wait_s)

    def snapshot(self) -> dict[str, Any]:
        counters = self.counters
        return {
            "listen": format_hostport(self.listen_address) if self.listen_address else None,
            "upstream": format_hostport(self.upstream),
            "counters": {
                "connections_opened": counters.connections_opened,
                "connections_open": counters.connections_open,
                "connect_failures": counters.connect_failures,
                "retransmissions": counters.retransmissions,
            },
        }
