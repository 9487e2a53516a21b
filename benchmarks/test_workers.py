"""The --workers axis: which paths it adds, where workers run, how a step is judged and reported.

`pytest benchmarks/test_workers.py`.  The socket checks use real sockets and
a real epoll instance of this process, read back through /proc.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

import pytest
from _forwarders import parse_relay_metrics
from _sockets import sockets_held, sockets_watched, udp_sockets
from _steps import disturbed
from _workers import PathSpec, expand, round_figures, summarise, worker_cores

FWD, GEN = 1, 0


def test_each_forwarder_on_the_axis_gets_one_path_per_count_and_placement() -> None:
    specs = expand(["direct", "asyncio", "uvloop", "nginx"], [1, 2], ["one-core", "spread"])
    assert [s.key for s in specs] == [
        "direct",
        "asyncio",
        "uvloop",
        "uvloop-x2-one-core",
        "uvloop-x2-spread",
        "nginx",
        "nginx-x2-one-core",
        "nginx-x2-spread",
    ]


def test_one_worker_is_measured_even_when_not_asked_for() -> None:
    # nginx with one worker is the anchor of every ratio.
    assert [s.key for s in expand(["nginx"], [2], ["spread"])] == ["nginx", "nginx-x2-spread"]


def test_one_core_keeps_every_worker_on_the_forwarders_core() -> None:
    assert worker_cores(PathSpec("uvloop", 2, "one-core"), FWD, GEN) == [FWD, FWD]


def test_spread_alternates_starting_on_the_forwarders_core() -> None:
    assert worker_cores(PathSpec("nginx", 3, "spread"), FWD, GEN) == [FWD, GEN, FWD]


def test_free_cores_skips_the_generators_core() -> None:
    spec = PathSpec("uvloop", 3, "free-cores")
    assert worker_cores(spec, forwarder_cpu=1, generator_cpu=0, cpus=[0, 1, 2, 3]) == [1, 2, 3]
    assert worker_cores(spec, forwarder_cpu=3, generator_cpu=0, cpus=[0, 1, 2, 3]) == [3, 1, 2]


def _step(**fields: Any) -> dict[str, Any]:
    step = {
        "passed": False,
        "sent": 100_000,
        "loss_limit": 0.01,
        "forwarder_busy": 0.5,
        "kernel_drops": {"forwarder_socket": 20_000, "sink_socket": 0, "other_sockets": 0},
        "drops_beside_generator": None,
    }
    return step | fields


def test_a_loss_while_the_forwarders_core_sat_idle_is_a_disturbance() -> None:
    assert disturbed(_step())


def test_a_loss_at_full_load_or_a_pass_is_not() -> None:
    assert not disturbed(_step(forwarder_busy=0.95))
    assert not disturbed(_step(passed=True))


def test_spread_losses_at_the_worker_beside_the_generator_are_the_measurement() -> None:
    assert not disturbed(_step(drops_beside_generator=20_000))


def test_spread_losses_at_the_idle_worker_on_the_forwarders_core_are_a_disturbance() -> None:
    assert disturbed(_step(drops_beside_generator=5_000))


def test_relay_metrics_are_summed_over_workers_and_kept_per_worker() -> None:
    text = "\n".join(
        [
            "# TYPE rtclab_lb_packets_total counter",
            'rtclab_lb_packets_total{direction="up",kind="rtp",worker="0"} 600.0',
            'rtclab_lb_packets_total{direction="up",kind="rtp",worker="1"} 400.0',
            'rtclab_lb_packets_total{direction="down",kind="rtp",worker="1"} 7.0',
            'rtclab_lb_flows{worker="0"} 55.0',
            'rtclab_lb_flows{worker="1"} 45.0',
            'rtclab_lb_drops_total{reason="unknown_source",worker="1"} 3.0',
            'rtclab_lb_drops_total{reason="malformed",worker="0"} 0.0',
        ]
    )
    found = parse_relay_metrics(text)
    assert found["flows"] == 100.0
    assert found["packets"] == {"up,rtp": 1000.0, "down,rtp": 7.0}
    assert found["drops"] == {"unknown_source": 3.0}
    assert found["by_worker"] == {
        "0": {"flows": 55.0, "up_packets": 600.0},
        "1": {"flows": 45.0, "up_packets": 400.0},
    }


def test_one_process_metrics_have_no_per_worker_part() -> None:
    found = parse_relay_metrics('rtclab_lb_flows 100.0\nrtclab_lb_drops_total{reason="x"} 2.0')
    assert found == {"drops": {"x": 2.0}, "packets": {}, "flows": 100.0}


def _best(cpu: dict[str, float], passed: bool = True) -> dict[str, Any]:
    return {
        "passed": passed,
        "achieved_pps": 100_000.0 if passed else 200_000.0,
        "send_seconds": 3.0,
        "drain_active_seconds": 0.0,
        "cpu_s_by_process": cpu,
        "drops_by_process": {"worker 0": 10, "worker 1": 30},
    }


def test_a_rounds_figures_compare_two_workers_with_one_and_split_them_per_worker() -> None:
    paths = {
        "uvloop": {"spec": {"kind": "uvloop", "workers": 1, "placement": None}, "steps": []},
        "uvloop-x2-spread": {
            "spec": {"kind": "uvloop", "workers": 2, "placement": "spread"},
            "processes": [
                {"pid": 10, "role": "parent", "cpu": FWD},
                {"pid": 11, "role": "worker 0", "cpu": FWD},
                {"pid": 12, "role": "worker 1", "cpu": GEN},
            ],
            "flows_by_process": {"worker 0": 40, "worker 1": 60},
            "forwarder_counters": {
                "by_worker": {"0": {"up_packets": 450.0}, "1": {"up_packets": 550.0}}
            },
            "steps": [
                _best({"parent": 0.0, "worker 0": 1.5, "worker 1": 1.5}, passed=False),
                _best({"parent": 0.03, "worker 0": 1.2, "worker 1": 1.77}),
            ],
        },
    }
    rows = {
        "uvloop": {"max_pps": 160_000.0, "cpu_us_per_packet": 6.0},
        "uvloop-x2-spread": {"max_pps": 100_000.0, "cpu_us_per_packet": 7.5},
    }
    figures = round_figures(paths, rows)
    two = figures["uvloop-x2-spread"]
    assert two["pps_ratio_to_1_worker"] == pytest.approx(0.625)
    assert two["cpu_ratio_to_1_worker"] == pytest.approx(1.25)
    assert two["busiest_flow_share"] == pytest.approx(0.6)
    # The parent's CPU over every one-way step, against all of the path's.
    assert two["supervisor_cpu_share"] == pytest.approx(0.03 / 6.0)
    second = two["per_worker"][1]
    assert (second["role"], second["cpu"], second["flows"]) == ("worker 1", GEN, 60)
    assert second["datagram_share"] == pytest.approx(0.55)
    assert second["cpu_share_at_max"] == pytest.approx(1.77 / 3.0)
    assert second["busy_at_max"] == pytest.approx(0.59)
    assert second["socket_drops"] == 60
    assert figures["uvloop"]["pps_ratio_to_1_worker"] == 1.0
    assert summarise([figures, figures])["uvloop-x2-spread"]["cores"] == [FWD, GEN]


def test_the_kernels_socket_table_shows_a_socket_its_drops_and_who_watches_it() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        select.epoll() as poller,
    ):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        inode = next(s.inode for s in udp_sockets() if s.local_port == port)
        assert inode in sockets_held(os.getpid())
        assert inode not in sockets_watched(os.getpid())
        poller.register(receiver.fileno(), select.EPOLLIN)
        assert inode in sockets_watched(os.getpid())
        # Nobody reads: a few hundred datagrams overflow a 4 KiB receive buffer.
        for _ in range(300):
            sender.sendto(b"x" * 200, ("127.0.0.1", port))
        drops = next(s.drops for s in udp_sockets() if s.inode == inode)
        assert drops > 0
