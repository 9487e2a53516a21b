"""The signaling command as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.signaling.conftest import StartStandIn, closed_port_url

OPTIONS = (
    "--listen",
    "--media",
    "--health-interval",
    "--health-timeout",
    "--unhealthy-after",
    "--forward-timeout",
    "--log-level",
    "--log-format",
)
HANG_GUARD_S = 30.0


def test_help_documents_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "signaling", "--help"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout
    assert "/v1/calls" in result.stdout


def test_no_media_server_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "signaling"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 2
    assert "--media" in result.stderr


async def test_serves_healthz_and_a_call_and_exits_cleanly_on_sigterm(
    standin: StartStandIn, offer_sdp: str, tmp_path: Path
) -> None:
    backend = await standin(4)
    url = closed_port_url()  # a free port for signaling to listen on
    log_path = tmp_path / "signaling.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "signaling",
            "--listen",
            url.removeprefix("http://"),
            "--media",
            backend.url,
            "--health-interval",
            "0.2",
            stdout=log_file,
            stderr=log_file,
        )
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(HANG_GUARD_S):
                while True:
                    assert process.returncode is None, log_path.read_text()
                    try:
                        async with http.get(f"{url}/healthz") as response:
                            health = await response.json()
                            if health["backends_healthy"] == 1:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.05)
                assert health["status"] == "ok"
                async with http.post(
                    f"{url}/v1/calls", data=offer_sdp, headers={"Content-Type": "application/sdp"}
                ) as response:
                    assert response.status == 201
                    assert response.headers["X-Rtclab-Backend"] == "4"
                async with http.get(f"{url}/metrics") as response:
                    assert "rtclab_signaling_calls_created_total" in await response.text()

            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(HANG_GUARD_S):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    logs = log_path.read_text()
    assert returncode == 0, logs
    events = [json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")]
    assert "call created" in events
    assert events[-1] == "stopped"
