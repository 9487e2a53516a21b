"""The Redis side of ``--state redis://...``: lookups and writes, off the forwarding path.

A thin shell over :mod:`stun_lb.core.state`: the router decides what to look
up and what to write; this module runs two tasks, each on its own Redis
connection.  The lookup task asks for every address waiting since its last
round trip in ONE ``MGET`` (the router bounds how many can wait), so the
clients of a dead relay, arriving within a few milliseconds of each other,
cost one round trip, not one connection each (redis-py runs one command per
connection at a time, and opens connections one by one: fifty clients taken
over at once waited 150-180 ms for their first packet with a GET each, and
7-21 ms with one MGET, on a loaded 2-core machine).  The writer task sends everything the router
has queued in one pipeline.  Nothing here blocks the loop that forwards
datagrams, and nothing is retried per packet: a failed lookup is answered
as failed (the router remembers that briefly), and a failed write is
dropped, counted, and healed by the next refresh of its flow.

The outage itself is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from stun_lb.core.config import RelayConfig, redact_url
from stun_lb.core.counters import Counters
from stun_lb.core.state import Delete, Put, StoreHealth, StoreOp, WriteBook, record_key
from wire.addr import Address

log = logging.getLogger("stun_lb")

# (client, the entry or None, failed): what a lookup hands back to the relay.
LookupAnswer = Callable[[Address, bytes | None, bool], None]

# What a store operation can raise: Redis's own errors (connection refused,
# timeouts, protocol), and the loop's timeout guard around each command.
_STORE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisState:
    """One Redis client, the lookup task and the writer task.  ``start()``, ``close()``."""

    def __init__(
        self,
        url: str,
        config: RelayConfig,
        counters: Counters,
        writes: WriteBook,
        health: StoreHealth,
        on_answer: LookupAnswer,
    ) -> None:
        self.url = redact_url(url)
        self._timeout_s = config.state_timeout_s
        self._retry_s = config.state_retry_s
        self._counters = counters
        self._writes = writes
        self._on_answer = on_answer
        # No retries inside the client: the relay has its own answer to a
        # failure (negative cache, refresh), and a retry would hold packets.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=config.state_timeout_s,
            socket_connect_timeout=config.state_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.health = health
        self._to_look_up: list[Address] = []
        self._lookup_wake = asyncio.Event()
        self._write_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Check the store once (a failure is logged, not fatal) and start both tasks."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except _STORE_ERRORS as exc:
            self._outcome(False, "connect", exc)
        else:
            log.info("state store connected", extra={"store": self.url})
        self._tasks = [
            asyncio.create_task(self._lookup_loop(), name="stun_lb state lookups"),
            asyncio.create_task(self._write_loop(), name="stun_lb state writer"),
        ]

    def lookup(self, client: Address) -> None:
        """Look ``client``'s entry up; the answer comes back through ``on_answer``."""
        self._to_look_up.append(client)
        self._lookup_wake.set()

    def flush(self) -> None:
        """The router has queued writes: wake the writer."""
        self._write_wake.set()

    def close(self) -> None:
        """Stop both tasks; lookups and writes not yet sent are dropped (entries expire)."""
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    # --- the tasks -----------------------------------------------------------------

    async def _lookup_loop(self) -> None:
        while True:
            await self._lookup_wake.wait()
            self._lookup_wake.clear()
            clients, self._to_look_up = self._to_look_up, []
            if clients:
                await self._look_up(clients)

    async def _look_up(self, clients: list[Address]) -> None:
        try:
            # The client's own timeouts apply too; this guard also covers a
            # reconnect that hangs between them.
            async with asyncio.timeout(self._timeout_s * 2):
                values = await self._redis.mget([record_key(client) for client in clients])
        except _STORE_ERRORS as exc:
            self._outcome(False, "lookup", exc)
            for client in clients:
                self._on_answer(client, None, True)
            return
        self._outcome(True, "lookup")
        for client, value in zip(clients, values, strict=True):
            # Bytes (the client does not decode responses); the annotation allows str.
            self._on_answer(client, value.encode() if isinstance(value, str) else value, False)

    async def _write_loop(self) -> None:
        while True:
            await self._write_wake.wait()
            self._write_wake.clear()
            ops = self._writes.pop_ops()
            if ops and not await self._write(ops):
                # Let writes coalesce in the router's book meanwhile: a down
                # store costs one attempt per retry interval, not one per flow.
                await asyncio.sleep(self._retry_s)

    async def _write(self, ops: list[StoreOp]) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        for op in ops:
            if isinstance(op, Put):
                pipe.set(op.key, op.value, px=op.ttl_ms)
            elif isinstance(op, Delete):
                pipe.delete(op.key)
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                await pipe.execute()
        except _STORE_ERRORS as exc:
            self._counters.state_error("write", len(ops))
            self._outcome(False, "write", exc)
            return False
        self._counters.state_writes += len(ops)
        self._outcome(True, "write")
        return True

    def _outcome(self, ok: bool, op: str, exc: BaseException | None = None) -> None:
        if not self.health.record(ok):
            return
        if ok:
            log.info("state store available again", extra={"store": self.url, "op": op})
        else:
            log.warning(
                "state store unavailable: known flows keep forwarding, new ones are not shared",
                extra={"store": self.url, "op": op, "error": repr(exc)},
            )
