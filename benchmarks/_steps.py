"""One step of load through a path, and what it cost: CPU per process, drops per socket.

A step runs the generator at one rate for a few seconds (one way, or echoed
back for round trips) and reads, before and after, each of the path's
processes' CPU time and each UDP socket's drop count.
"""

from __future__ import annotations

from typing import Any

from _forwarders import Running
from _procs import cpu_seconds_by_pid
from _sockets import UdpSocket, drops_by_inode, drops_by_port, udp_sockets
from _udpblast import Blaster

# A failing step at which the forwarder's processes used less than this share
# of its core was disturbed (see disturbed); it is repeated at most this many times.
DISTURBED_BUSY = 0.80
DISTURBED_RETRIES = 2


class Meter:
    """The path's processes' CPU time and the sockets' drops, from one reading to the next."""

    def __init__(self, path: Running, sink_port: int, forwarder_cpu: int) -> None:
        self.path = path
        self.sink_port = sink_port
        self.forwarder_cpu = forwarder_cpu
        self._cpu = cpu_seconds_by_pid(path.pids)
        self._sockets = udp_sockets()

    def read(self) -> dict[str, Any]:
        """What was spent and dropped since this meter was made."""
        cpu_after = cpu_seconds_by_pid(self.path.pids)
        sockets_after = udp_sockets()
        by_role: dict[str, float] = {}
        for proc in self.path.processes:
            spent = cpu_after[proc.pid] - self._cpu[proc.pid]
            by_role[proc.role] = by_role.get(proc.role, 0.0) + spent
        own_core = sum(
            cpu_after[p.pid] - self._cpu[p.pid]
            for p in self.path.processes
            if p.cpu == self.forwarder_cpu
        )
        beside = {p.role for p in self.path.processes if p.cpu != self.forwarder_cpu}
        by_reader = _drops_by_reader(self._sockets, sockets_after, self.path.readers)
        return {
            "cpu_s": sum(by_role.values()),
            "cpu_s_by_process": by_role,
            "own_core_cpu_s": own_core,
            "kernel_drops": self._drops_since(sockets_after),
            "drops_by_process": by_reader,
            # Drops at the sockets of workers beside the generator (None: there are none).
            "drops_beside_generator": (
                sum(n for role, n in by_reader.items() if role in beside) if beside else None
            ),
        }

    def _drops_since(self, after: list[UdpSocket]) -> dict[str, int]:
        before, now = drops_by_port(self._sockets), drops_by_port(after)
        delta = {port: now.get(port, 0) - before.get(port, 0) for port in now}
        target = self.path.target[1]
        forwarder_port = target if target != self.sink_port else None
        forwarder = delta.get(forwarder_port, 0) if forwarder_port else 0
        sink = delta.get(self.sink_port, 0)
        return {
            "forwarder_socket": forwarder,
            "sink_socket": sink,
            "other_sockets": sum(delta.values()) - forwarder - sink,
        }


def _drops_by_reader(
    before: list[UdpSocket], after: list[UdpSocket], readers: dict[int, str]
) -> dict[str, int]:
    """Drops at the public port's sockets, by the process that reads each."""
    was, now = drops_by_inode(before), drops_by_inode(after)
    found: dict[str, int] = {}
    for inode, role in readers.items():
        found[role] = found.get(role, 0) + now.get(inode, 0) - was.get(inode, 0)
    return found


def oneway_step(
    path: Running,
    gen: Blaster,
    sink_port: int,
    forwarder_cpu: int,
    rate_pps: float,
    seconds: float,
    loss_limit: float,
) -> dict[str, Any]:
    meter = Meter(path, sink_port, forwarder_cpu)
    step = gen.oneway(rate_pps, seconds)
    spent = meter.read()
    cpu = spent.pop("cpu_s")
    own_core = spent.pop("own_core_cpu_s")
    step.update(spent)
    step["sends"] = gen.sends
    sent, received = step["sent"], step["sink_received"]
    step["loss"] = 1.0 - received / sent if sent else 1.0
    step["delivered_pps"] = received / step["send_seconds"] if step["send_seconds"] else 0.0
    step["forwarder_cpu_s"] = cpu if path.pids else None
    step["cpu_us_per_packet"] = cpu * 1e6 / received if path.pids and received else None
    # Share of its own core the forwarder used: near 1 at a loss means it ran
    # out of CPU; well below 1 means it lost datagrams for another reason.
    # Workers beside the generator are not on that core and not counted here.
    elapsed = step["send_seconds"] + step["drain_active_seconds"]
    step["forwarder_busy"] = own_core / elapsed if path.pids and elapsed else None
    step["loss_limit"] = loss_limit
    step["passed"] = step["loss"] < loss_limit
    return step


def echo_step(
    path: Running, gen: Blaster, sink_port: int, forwarder_cpu: int, rate_pps: float, seconds: float
) -> dict[str, Any]:
    meter = Meter(path, sink_port, forwarder_cpu)
    step = gen.echo(rate_pps, seconds)
    spent = meter.read()
    cpu = spent.pop("cpu_s")
    spent.pop("own_core_cpu_s")
    step.update(spent)
    # Each request crosses the forwarder once each way.
    forwarded = step["sink_received"] + step["replies"]
    step["lost"] = step["sent"] - step["replies"]
    step["forwarder_cpu_s"] = cpu if path.pids else None
    step["cpu_us_per_packet"] = cpu * 1e6 / forwarded if path.pids and forwarded else None
    return step


def disturbed(step: dict[str, Any]) -> bool:
    """A loss while the forwarder had time to spare: its core was taken from it.

    A forwarder that cannot keep up runs flat out (about 90-100 % of its core
    here); one that loses datagrams while using much less was not running when
    its receive buffer filled up: a neighbour on the machine, or the host.
    Such a step says nothing about the forwarder and is repeated.

    With a worker beside the generator (the spread placement) losses at THAT
    worker's socket are what the placement measures (it shares a busy core by
    design), so only a loss at the sockets of the workers on the forwarder's
    own core, while they left it idle, counts as a disturbance.
    """
    busy = step.get("forwarder_busy")
    if step["passed"] or busy is None or busy >= DISTURBED_BUSY:
        return False
    beside = step.get("drops_beside_generator")
    if beside is None:
        return True
    on_own_core = step["kernel_drops"]["forwarder_socket"] - beside
    return bool(on_own_core >= step["loss_limit"] * step["sent"])


def step_line(step: dict[str, Any]) -> str:
    """One step, for the progress log."""
    cpu = step.get("cpu_us_per_packet")
    busy = step.get("forwarder_busy")
    drops = step["kernel_drops"]
    by_worker = step.get("drops_by_process", {})
    per_worker = (
        " (" + ", ".join(f"{role} {n}" for role, n in by_worker.items()) + ")"
        if len(by_worker) > 1
        else ""
    )
    return (
        f"    offered {step['offered_pps']:>10,.0f}/s  sent {step['achieved_pps']:>10,.0f}/s  "
        f"delivered {step['delivered_pps']:>10,.0f}/s  loss {step['loss'] * 100:6.2f}%  "
        f"cpu {'-' if cpu is None else f'{cpu:.2f} us/pkt':>12} "
        f"{'' if busy is None else f'busy {busy:4.0%}'}  "
        f"drops fwd/sink {drops['forwarder_socket']}{per_worker}/{drops['sink_socket']}  "
        f"{'pass' if step['passed'] else 'FAIL'}"
    )
