"""``python -m stun_lb`` as a real subprocess: --help, /healthz, a clean SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stun_lb.cli import command
from tests.stun_lb.packets import SECRET, Session
from wire import stun

HANG_GUARD_S = 15.0
OPTIONS = [param.opts[0] for param in command.params if param.opts[0].startswith("--")]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stun_lb", "--help"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(OPTIONS) >= {
        "--listen",
        "--admin",
        "--backend",
        "--config",
        "--secret",
        "--rebind",
        "--verify-integrity",
        "--idle-timeout",
        "--max-flows",
        "--loop",
        "--log-level",
        "--log-format",
        "--workers",
        "--reuse-port",
        "--state",
    }
    for option in OPTIONS:
        assert option in result.stdout
    assert "table_full" in result.stdout and "never evicted" in result.stdout
    assert "lab use only" in result.stdout
    # When Redis is worth running, and how two relays share a port with it.
    help_text = " ".join(result.stdout.split())
    assert "Use Redis when calls must survive a relay dying or restarting" in help_text
    assert "--reuse-port --state redis://" in help_text
    assert "NOT restarted" in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "one=127.0.0.1"], "not an integer"),
        (["--backend", "1=127.0.0.1", "--state", "redis://nowhere"], "no port"),
        (["--backend", "1=127.0.0.1", "--workers", "2", "--no-reuse-port"], "cannot be off"),
    ],
)
def test_a_usage_error_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stun_lb", *args],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serves_two_backends_then_exits_cleanly_on_sigterm(loop: str, tmp_path: Path) -> None:
    admin_port = free_port()
    udp_port = free_port(socket.SOCK_DGRAM)
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind(("127.0.0.1", 0))
    backend.settimeout(HANG_GUARD_S)
    config = tmp_path / "lb.toml"
    config.write_text('backend = ["2=127.0.0.1"]\nidle-timeout = 9\n')
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stun_lb",
            "--listen",
            f"127.0.0.1:{udp_port}",
            "--admin",
            f"127.0.0.1:{admin_port}",
            "--backend",
            "1=127.0.0.1",
            "--config",
            str(config),
            "--secret",
            SECRET.decode(),
            "--loop",
            loop,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = _wait_for_health(f"http://127.0.0.1:{admin_port}/healthz", process)
        assert health["status"] == "ok"
        assert health["listen"] == f"127.0.0.1:{udp_port}"
        assert health["backends"] == {"1": "127.0.0.1", "2": "127.0.0.1"}
        assert health["rebind"] == "off" and health["idle_timeout_s"] == 9.0

        # One real check through the process, so the exit below has a flow to clean up.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            session = Session(backend_id=2, port=backend.getsockname()[1])
            client.sendto(session.check(), ("127.0.0.1", udp_port))
            request, _ = backend.recvfrom(2048)
            assert stun.parse(request).username == f"{session.server_ufrag}:cli1"

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=HANG_GUARD_S)
    finally:
        backend.close()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert events[0] == "relay listening"
    assert "flow opened" in events and events[-1] == "stopped"
    assert "relay closed" in events


def _wait_for_health(url: str, process: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"relay exited early: {process.communicate()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                body: dict[str, object] = json.loads(response.read())
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
