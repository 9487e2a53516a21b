"""The media server as a real subprocess: --help, serving, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.webrtc_server.conftest import MakeOffer, free_tcp_port, udp_ports_open

OPTIONS = (
    "--listen",
    "--backend-id",
    "--bind-host",
    "--media-socket",
    "--media-port",
    "--forward",
    "--trusted-relay",
    "--topology",
    "--relay",
    "--secret",
    "--setup-timeout",
    "--model-delay-ms",
    "--response-seconds",
    "--generation-speed",
    "--vad-hangover-ms",
    "--log-level",
    "--log-format",
)
HANG_GUARD_S = 30.0


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webrtc_server", "--help"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout, option
    # Every option has a sentence of help, not just a name.
    assert result.stdout.count("[default:") >= len(OPTIONS) - 2  # --secret, --trusted-relay


async def test_serves_and_exits_cleanly_on_sigterm_closing_sessions(
    make_offer: MakeOffer, tmp_path: Path
) -> None:
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "media.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webrtc_server",
            "--listen",
            f"127.0.0.1:{port}",
            "--backend-id",
            "9",
            "--topology",
            "direct",
            stdout=log_file,
            stderr=log_file,
        )
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(HANG_GUARD_S):
                while True:
                    assert process.returncode is None, log_path.read_text()
                    try:
                        async with http.get(f"{base}/healthz") as response:
                            health = await response.json()
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                media_address = health.pop("media_address")
                assert health == {
                    "status": "ok",
                    "backend_id": 9,
                    "sessions": 0,
                    "draining": False,
                    "topology": "direct",
                    "relay": None,
                    "media_socket": "shared",
                    "forward": "nat",
                }
                _pc, offer = await make_offer()
                async with http.post(
                    f"{base}/sessions", data=offer, headers={"Content-Type": "application/sdp"}
                ) as response:
                    assert response.status == 201, await response.text()
                    location = response.headers["Location"]
                async with http.get(f"{base}{location}") as response:
                    session_port = (await response.json())["local_port"]
                # One socket for every session: the session's port is the server's.
                assert f"127.0.0.1:{session_port}" == media_address
                assert session_port in udp_ports_open()
                async with http.get(f"{base}/metrics") as response:
                    assert "rtclab_media_sessions 1.0" in await response.text()

            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(HANG_GUARD_S):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = log_path.read_text()
    assert code == 0, log
    assert session_port not in udp_ports_open()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    closed = [r for r in records if r["event"] == "session closed"]
    assert [r["reason"] for r in closed] == ["shutdown"], log
    assert records[-1]["event"] == "stopped"
