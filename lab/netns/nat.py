"""Real NAT rebinding: the kernel's mapping of one run's caller traffic, moved on demand.

A run's traffic is recognised by its destination: the run's relay port on the
server address.  ``port`` forgets the conntrack entries towards it, so the
next packet is masqueraded afresh (fully random source port) -- a NAT whose
mapping expired.  ``address`` first adds another public address to the
NAT's outside interface and maps the run's relay port to it, then forgets
the entries -- a client that moved to another network.  Either way the old
public address:port is simply gone: what the server still sends there is
dropped by the NAT.

What moved is read back from conntrack (old and new public address of each
mapping), so a result records what the relay actually saw change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from lab.netns.plan import (
    TABLE,
    Mapping,
    conntrack_delete,
    conntrack_list,
    in_namespace,
    next_address,
    parse_conntrack,
)

log = logging.getLogger("rtclab.netns")

# The next packet of a live call (RTP every 20 ms, consent checks every ~5 s) makes
# the new mapping; a call with nothing flowing for this long shows no new mapping.
NEW_MAPPING_WAIT_S = 6.0
_POLL_S = 0.05
PENDING = "pending"  # a rebind's new address before the next packet has shown it


class NatError(RuntimeError):
    pass


async def sh(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    if check and process.returncode != 0:
        raise NatError(
            f"{' '.join(argv)} exited with {process.returncode}: {err.decode().strip()[:300]}"
        )
    return out.decode()


class NatControl:
    """The NAT's mappings towards ``server_address:relay_port``, in ``namespace``."""

    def __init__(
        self,
        namespace: str | None,
        *,
        server_address: str,
        relay_port: int,
        wan_device: str,
        prefix_len: int,
        pool: Sequence[str],
        in_use: set[str],
    ) -> None:
        self.namespace = namespace
        self.server_address = server_address
        self.relay_port = relay_port
        self.wan_device = wan_device
        self.prefix_len = prefix_len
        self.pool = pool
        # Moved-to addresses taken by any run of this lab (shared: parallel runs
        # must not be moved onto one another's address).
        self.in_use = in_use
        self.moved_to: list[str] = []
        self._pending: list[asyncio.Task[None]] = []

    def _in(self, argv: Sequence[str]) -> list[str]:
        return in_namespace(self.namespace, argv)

    async def mappings(self) -> list[Mapping]:
        """This run's UDP mappings out to the server (a caller's or an emulator socket's)."""
        out = await sh(self._in(conntrack_list(self.server_address, self.relay_port)))
        return [m for m in parse_conntrack(out) if not m.redirected]

    async def _forget(self) -> None:
        # conntrack -D exits 1 when nothing matched: a call with no live mapping is no error.
        await sh(self._in(conntrack_delete(self.server_address, self.relay_port)), check=False)

    async def _move_address(self) -> str:
        address = next_address(self.pool, sorted(self.in_use))
        self.in_use.add(address)
        self.moved_to.append(address)
        await sh(
            self._in(["ip", "addr", "add", f"{address}/{self.prefix_len}", "dev", self.wan_device])
        )
        # Replace this port's element (delete fails harmlessly when there is none yet).
        await sh(self._nft_element("delete", with_value=None), check=False)
        await sh(self._nft_element("add", with_value=address))
        return address

    def _nft_element(self, verb: str, with_value: str | None) -> list[str]:
        element = f"{self.relay_port} : {with_value}" if with_value else str(self.relay_port)
        return self._in(["nft", verb, "element", "ip", TABLE, "moved", f"{{ {element} }}"])

    async def rebind(self, mode: str) -> list[dict[str, str]]:
        """Move every mapping of this run; ``[{"caller", "old", "new"}]`` as conntrack saw it.

        Returns as soon as the mappings are gone, so the scenario's clock marks
        the move within milliseconds (its analysis looks for the silence that
        starts at the event).  ``new`` is filled in (in the same dicts) once
        the calls' next packets made their new mappings, at the latest when
        the path closes, before the run's results are written.
        """
        if mode not in ("port", "address"):
            raise NatError(f"rebind mode must be port or address, not {mode!r}")
        before = await self.mappings()
        if mode == "address":
            await self._move_address()
        await self._forget()
        result = [
            {"caller": _hostport(m.inside), "old": _hostport(m.public), "new": PENDING}
            for m in before
        ]
        self._pending.append(asyncio.create_task(self._record_new(mode, before, result)))
        return result

    async def _record_new(
        self, mode: str, before: list[Mapping], result: list[dict[str, str]]
    ) -> None:
        """Fill in the new public address of each mapping once the next packets made it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NEW_MAPPING_WAIT_S
        wanted = {m.inside for m in before}
        while True:
            await asyncio.sleep(_POLL_S)
            now = {m.inside: m for m in await self.mappings()}
            if wanted <= set(now) or loop.time() > deadline:
                break
        for old, entry in zip(before, result, strict=True):
            new = now.get(old.inside)
            entry["new"] = _hostport(new.public) if new else "no new mapping seen"
        log.info("nat rebind", extra={"mode": mode, "rebinds": result})

    async def close(self) -> None:
        """Finish recording rebinds; undo this run's address moves (conntrack ages out)."""
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending, return_exceptions=True)
        if not self.moved_to:
            return
        with contextlib.suppress(NatError):
            await sh(self._nft_element("delete", with_value=None), check=False)
        for address in self.moved_to:
            await sh(
                self._in(
                    ["ip", "addr", "del", f"{address}/{self.prefix_len}", "dev", self.wan_device]
                ),
                check=False,
            )
            self.in_use.discard(address)
        self.moved_to = []


def _hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"
