"""What the interop tests share: skipping honestly, and watching a live call from the stack."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import pytest

from lab.stack import Stack


def skip_or_fail(reason: str) -> None:
    """On a developer's machine a missing client skips; in CI these tests must run."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


async def get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def relay_view_while_live(
    stack: Stack, call: asyncio.Task[Any], *, both_ways: bool
) -> tuple[list[Any], Any]:
    """The relay's flows and the media server's session once media flows.

    ``both_ways`` waits for the agent's audio too; a send-only client only sends.
    """
    while not call.done():
        sessions = await get(f"{stack.media_url(0)}/sessions")
        flows = await get(f"{stack.relay_admin_url}/flows")
        flowing = flows and all(
            flow["packets_up"] > 50 and (not both_ways or flow["packets_down"] > 50)
            for flow in flows
        )
        if sessions and sessions[0]["state"] == "connected" and flowing:
            return flows, sessions[0]
        await asyncio.sleep(0.2)
    pytest.fail(f"the call ended before media flowed: {call.result()}")
