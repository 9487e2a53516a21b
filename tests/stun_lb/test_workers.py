"""``--workers 2`` as a real process tree: the kernel spreads clients, the parent aggregates.

The workers share the public port through SO_REUSEPORT, which hashes each
client address onto one of them; 16 clients on distinct ports land on both
workers except with odds of 2 in 65536.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stun_lb.core.state import record_key
from tests.stun_lb.packets import Session, rtp
from tests.stun_lb.processes import (
    HANG_GUARD_S,
    RelayProcess,
    free_port,
    process_gone,
    udp_socket,
    wait_until,
)
from tests.stun_lb.redis_server import RedisServer


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.kill()


def worker_pids(relay: RelayProcess) -> list[int]:
    return [worker["pid"] for worker in relay.get("/healthz")["workers"]]


def test_both_workers_get_clients_and_the_parent_shows_both_then_stops_them_all(
    relays: list[RelayProcess], tmp_path: Path
) -> None:
    relay = RelayProcess(free_port(socket.SOCK_DGRAM), "--workers", "2", log_dir=tmp_path)
    relays.append(relay)
    backend = udp_socket()
    clients = [udp_socket() for _ in range(16)]
    for index, client in enumerate(clients):
        session = Session(port=backend.getsockname()[1], client_ufrag=f"c{index}")
        client.sendto(session.check(), relay.address)
    for _ in clients:
        backend.recvfrom(2048)

    flows = relay.get("/flows")
    assert sorted(flow["client"] for flow in flows) == sorted(
        f"127.0.0.1:{client.getsockname()[1]}" for client in clients
    )
    per_worker = {worker: sum(f["worker"] == worker for f in flows) for worker in (0, 1)}
    assert min(per_worker.values()) >= 1, per_worker

    metrics = relay.metrics()
    for worker, count in per_worker.items():
        labels = frozenset({("worker", str(worker))})
        assert metrics[("rtclab_lb_flows_created_total", labels)] == count
        assert metrics[("rtclab_lb_flows", labels)] == count
        assert metrics[("rtclab_lb_worker_up", labels)] == 1
    assert metrics[("rtclab_lb_workers", frozenset({("state", "alive")}))] == 2

    health = relay.get("/healthz")
    assert health["status"] == "ok" and health["flows"] == 16
    assert [(w["worker"], w["alive"], w["flows"]) for w in health["workers"]] == [
        (0, True, per_worker[0]),
        (1, True, per_worker[1]),
    ]
    pids = worker_pids(relay)

    assert relay.stop() == 0
    assert all(process_gone(pid) for pid in pids)
    log = relay.log()
    assert log.count('"event": "relay closed"') == 2
    assert '"event": "workers stopped"' in log


def test_a_dead_workers_flows_move_to_the_other_through_redis_and_it_is_not_restarted(
    relays: list[RelayProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    relay = RelayProcess(
        free_port(socket.SOCK_DGRAM),
        "--workers",
        "2",
        "--state",
        redis_server.url,
        log_dir=tmp_path,
    )
    relays.append(relay)
    pids = worker_pids(relay)
    backend, client = udp_socket(), udp_socket()
    client.sendto(Session(port=backend.getsockname()[1]).check(), relay.address)
    _, upstream = backend.recvfrom(2048)
    [flow] = relay.get("/flows")
    owner, survivor = pids[flow["worker"]], pids[1 - flow["worker"]]
    with redis_server.client() as redis:
        wait_until(lambda: redis.exists(record_key(client.getsockname())), "the flow's entry")

    os.kill(owner, signal.SIGKILL)

    def owner_state() -> dict[str, Any]:
        state: dict[str, Any] = relay.get("/healthz")["workers"][flow["worker"]]
        return state

    wait_until(lambda: not owner_state()["alive"], "the parent to notice")
    assert owner_state()["exitcode"] == -signal.SIGKILL
    assert relay.get("/healthz")["status"] == "degraded"
    assert worker_pids(relay) == pids  # no replacement
    assert relay.metric("rtclab_lb_workers", state="dead") == 1

    # The survivor holds the only socket on the port now, and finds the flow in Redis.
    client.sendto(rtp(seq=1), relay.address)
    assert backend.recvfrom(2048) == (rtp(seq=1), upstream)
    backend.sendto(rtp(ssrc=3), upstream)
    assert client.recvfrom(2048) == (rtp(ssrc=3), relay.address)
    [moved] = relay.get("/flows")
    assert moved["worker"] == 1 - flow["worker"]

    relay.kill()  # SIGKILL the parent: the kernel SIGTERMs the worker (PR_SET_PDEATHSIG)
    wait_until(lambda: process_gone(survivor), "the orphaned worker to exit")


def test_the_parent_exits_1_when_every_worker_is_gone(
    relays: list[RelayProcess], tmp_path: Path
) -> None:
    relay = RelayProcess(free_port(socket.SOCK_DGRAM), "--workers", "2", log_dir=tmp_path)
    relays.append(relay)
    for pid in worker_pids(relay):
        os.kill(pid, signal.SIGKILL)
    assert relay.process.wait(timeout=15) == 1
    assert "every worker" in relay.log()


def test_a_worker_that_cannot_bind_fails_the_start_with_a_message() -> None:
    # Someone holds the port WITHOUT SO_REUSEPORT: no worker can join it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "stun_lb",
                "--workers",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
                "--admin",
                f"127.0.0.1:{free_port()}",
                "--backend",
                "1=127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
            check=False,
        )
    assert result.returncode == 1
    assert "exited while starting" in result.stderr
    assert "Address already in use" in result.stderr
