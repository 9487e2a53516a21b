"""A small async client for the emulator's control API, for scenarios and tests.

::

    async with NetemControl("http://127.0.0.1:9479") as netem:
        await netem.impair("up", loss=0.05)
        await netem.impair(burst={"loss": 0.03, "mean_burst_packets": 3})
        moved = await netem.rebind("address")          # every mapping
        state = await netem.state()
"""

from __future__ import annotations

from enum import Enum
from types import TracebackType
from typing import Any

import aiohttp


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET  # "leave as it is", distinct from None (which clears burst and rate)


class NetemControlError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NetemControl:
    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __aenter__(self) -> NetemControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._client().request(method, self.url + path, json=body) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                error = payload.get("error", {}) if isinstance(payload, dict) else {}
                raise NetemControlError(
                    response.status,
                    str(error.get("code", "http_error")),
                    str(error.get("message", payload)),
                )
            return payload

    async def impair(
        self,
        direction: str = "both",
        *,
        reset: bool = False,
        delay_ms: float | _Unset = UNSET,
        jitter_ms: float | _Unset = UNSET,
        loss: float | _Unset = UNSET,
        burst: dict[str, float] | _Unset | None = UNSET,
        rate_kbps: float | _Unset | None = UNSET,
        queue_limit_ms: float | _Unset = UNSET,
        blackhole: bool | _Unset = UNSET,
        reorder: bool | _Unset = UNSET,
    ) -> dict[str, Any]:
        """Change ``direction`` (up, down, both); returns the impairments now in force.

        ``burst`` is ``{"p", "r", "loss_good"?, "loss_bad"?}`` (Gilbert-Elliott)
        or ``{"loss", "mean_burst_packets"}``; ``None`` switches it off, as
        ``rate_kbps=None`` removes the rate limit.
        """
        fields = {
            "delay_ms": delay_ms,
            "jitter_ms": jitter_ms,
            "loss": loss,
            "burst": burst,
            "rate_kbps": rate_kbps,
            "queue_limit_ms": queue_limit_ms,
            "blackhole": blackhole,
            "reorder": reorder,
        }
        body: dict[str, Any] = {"direction": direction}
        if reset:
            body["reset"] = True
        body.update({name: value for name, value in fields.items() if value is not UNSET})
        payload = await self._call("POST", "/impair", body)
        return dict(payload["impairments"])

    async def rebind(self, mode: str = "port", caller: str | None = None) -> list[dict[str, str]]:
        """Move one caller's mapping (``host:port``), or all, to a new outbound socket.

        ``mode`` is ``port`` (new source port, same address: a NAT rebinding) or
        ``address`` (new source address: the client changed networks).  Returns
        ``[{"caller", "old", "new"}]``.
        """
        payload = await self._call("POST", "/rebind", {"mode": mode, "caller": caller})
        return list(payload["rebinds"])

    async def state(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/state"))

    async def stun(self) -> dict[str, Any] | None:
        """Every caller's STUN messages as the emulator passed them (``GET /stun``)."""
        return dict(await self._call("GET", "/stun"))

    async def healthy(self) -> bool:
        try:
            await self._call("GET", "/healthz")
        except (aiohttp.ClientError, NetemControlError, TimeoutError):
            return False
        return True
