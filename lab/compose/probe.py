"""One call from the caller container, and the path it took as the services saw it.

``scripts/compose call`` runs ``python -m lab.compose.probe`` in the caller
container: a real call through signaling and the relay, then the relay's
``/flows`` and every media server's ``/sessions`` (closed ones included).  It
prints one JSON object: the call result, the caller's own address, each flow
(client -> upstream socket -> backend) and each session's remote peer -- so
anyone can check that the media servers only ever talked to the relay.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import click

from lab.callers.aiortc_caller import run_call
from lab.compose.caller import ComposeServices
from lab.stack import source_address_towards


async def probe(services: ComposeServices, seconds: float) -> dict[str, Any]:
    caller = source_address_towards(*services.relay)
    result = await run_call(f"{services.signaling_url}/v1/calls", seconds=seconds, bind_host=caller)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"{services.relay_admin_url}/flows") as response:
            flows = await response.json()
        sessions = {}
        for url in services.media_urls:
            async with http.get(f"{url}/sessions", params={"closed": "1"}) as response:
                sessions[url] = await response.json()
    return {
        "call": {
            key: result.get(key)
            for key in ("ok", "error", "call_id", "backend", "setup_ms", "uplink", "downlink")
        },
        "caller_address": caller,
        "relay": f"{services.relay[0]}:{services.relay[1]}",
        "flows": flows,
        "sessions": sessions,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", type=click.FloatRange(1.0, 600.0), default=4.0, show_default=True)
def main(seconds: float) -> None:
    """One call from this (caller) container; print it and the relay's and media's view."""
    found = asyncio.run(probe(ComposeServices.from_environment(), seconds))
    click.echo(json.dumps(found))
    sys.exit(0 if found["call"]["ok"] else 1)


if __name__ == "__main__":
    main()
