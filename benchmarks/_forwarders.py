"""The paths under test, each a context manager that starts it and cleans it up.

A path is what sits between the generator's flow sockets and the sink: nothing
(direct), the relay on one event loop or the other, nginx's stream UDP proxy,
or the kernel (nftables DNAT).  The relay and nginx may run several worker
processes on the one public port (see _workers): each worker is pinned to the
core its placement names, and every other process of the path (the relay's
supervising parent, nginx's master) to the forwarder's core (see _procs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import children, descendants, free_port, pin, spawn, stop, tail, wait_until
from _sockets import sockets_held, sockets_watched, udp_sockets
from _workers import PathSpec, worker_cores

_NGINX_STREAM_MODULES = (
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/lib64/nginx/modules/ngx_stream_module.so",
)


@dataclass(frozen=True)
class Context:
    """What every path needs to know about the run."""

    workdir: Path
    sink_port: int
    secret: str
    forwarder_cpu: int
    generator_cpu: int
    flows: int
    # Every core the run may use (free-cores places workers on those not the generator's).
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Proc:
    """One process of a path: what it does there, and the core it is pinned to."""

    pid: int
    # "relay" (one process), "parent" (the relay's supervisor), "master" (nginx's),
    # "worker N", or "helper" (multiprocessing's resource tracker).
    role: str
    cpu: int


@dataclass
class Running:
    """A started path: where the generator sends, and what to measure."""

    name: str
    target: tuple[str, int]
    # Processes whose CPU time is the forwarder's (empty: none, or in-kernel).
    processes: list[Proc] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # Forwarder-side counters to keep with the results (the relay's /metrics).
    counters: Callable[[], dict[str, Any]] | None = None
    # Socket inode -> role of the process that reads it, for the public port's sockets.
    readers: dict[int, str] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes]


def find_readers(processes: list[Proc], port: int) -> dict[int, str]:
    """Which process reads each socket bound to the public port (one per worker)."""
    public = {s.inode for s in udp_sockets() if s.local_port == port and not s.remote_port}
    readers = {}
    for proc in processes:
        for inode in sockets_watched(proc.pid) & public:
            readers[inode] = proc.role
    return readers


def flows_by_process(path: Running, sink_port: int) -> dict[str, int]:
    """Flows each process serves: its sockets connected to the sink (one upstream per flow)."""
    upstream = {s.inode for s in udp_sockets() if s.remote_port == sink_port}
    found = {proc.role: len(sockets_held(proc.pid) & upstream) for proc in path.processes}
    return {role: count for role, count in found.items() if count}


def _pin_workers(workers: list[int], spec: PathSpec, ctx: Context) -> list[int]:
    """Pin each worker where the placement says; the cores, in worker order."""
    cores = worker_cores(spec, ctx.forwarder_cpu, ctx.generator_cpu, ctx.cpus)
    for pid, cpu in zip(workers, cores, strict=True):
        pin(pid, cpu)
    return cores


# Starts a path of one kind (a --paths name) as the spec says; stops it on exit.
Starter = Callable[[Context, PathSpec], contextlib.AbstractContextManager[Running]]


class PathUnavailable(RuntimeError):
    """The path cannot run on this machine (a tool is missing); it is skipped."""


# --- the paths ---------------------------------------------------------------


@contextlib.contextmanager
def direct(ctx: Context, _spec: PathSpec) -> Iterator[Running]:
    """No forwarder: the flows send straight to the sink (the baseline)."""
    yield Running("direct", ("127.0.0.1", ctx.sink_port), facts={"forwarder": "none"})


def stun_lb(loop: str, forward: str = "nat") -> Starter:
    """The relay on ``loop``; ``forward`` encap sends every datagram behind a PROXY v2 header
    from one internal socket (the sink counts past the header and echoes it back)."""

    @contextlib.contextmanager
    def start(ctx: Context, spec: PathSpec) -> Iterator[Running]:
        port = free_port(socket.SOCK_DGRAM)
        admin = free_port(socket.SOCK_STREAM)
        encap = (
            ["--forward", "encap", "--internal", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]
            if forward == "encap"
            else []
        )
        log_path = ctx.workdir / f"stun_lb-{spec.key}.log"
        argv = [
            sys.executable,
            "-m",
            "stun_lb",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--backend",
            "1=127.0.0.1",
            "--loop",
            loop,
            "--workers",
            str(spec.workers),
            # Longer than the whole benchmark: no flow may expire between steps.
            "--idle-timeout",
            "3600",
            "--max-flows",
            str(max(1000, 2 * ctx.flows)),
            "--log-level",
            "info",
            *encap,
        ]
        env = dict(os.environ, RTCLAB_SECRET=ctx.secret)
        with log_path.open("wb") as log:
            proc = spawn(argv, cpu=ctx.forwarder_cpu, log=log, env=env)
        try:
            base = f"http://127.0.0.1:{admin}"
            what = f"stun_lb ({loop}, {spec.workers} workers)"
            wait_until(lambda: _http_ok(base + "/healthz"), proc, what)
            facts: dict[str, Any] = {"argv": argv[1:], "loop_requested": loop}
            loops = _logged_loops(log_path)
            facts["loop_running"] = loops[0] if len(set(loops)) == 1 else loops or None
            if any(running != loop for running in loops):
                raise RuntimeError(f"asked stun_lb for {loop}, it runs {loops}")
            processes = _relay_processes(proc.pid, base, spec, ctx)
            name = f"stun_lb ({loop})" if forward == "nat" else f"stun_lb ({loop}, {forward})"
            yield Running(
                spec.label(name),
                ("127.0.0.1", port),
                processes=processes,
                facts=facts,
                counters=lambda: _relay_counters(base + "/metrics"),
                readers=find_readers(processes, port),
            )
        except Exception:
            print(tail(log_path), flush=True)
            raise
        finally:
            stop(proc)

    return start


def _relay_processes(pid: int, admin: str, spec: PathSpec, ctx: Context) -> list[Proc]:
    """The relay's processes: one, or the parent, its workers (pinned) and helpers."""
    if spec.workers == 1:
        return [Proc(pid, "relay", ctx.forwarder_cpu)]
    with urllib.request.urlopen(admin + "/healthz", timeout=5.0) as response:
        health = json.load(response)
    workers = [w["pid"] for w in sorted(health["workers"], key=lambda w: w["worker"])]
    cores = _pin_workers(workers, spec, ctx)
    helpers = [p for p in descendants(pid) if p not in workers]
    return [
        Proc(pid, "parent", ctx.forwarder_cpu),
        *(
            Proc(w, f"worker {i}", cpu)
            for i, (w, cpu) in enumerate(zip(workers, cores, strict=True))
        ),
        *(Proc(h, "helper", ctx.forwarder_cpu) for h in helpers),
    ]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _logged_loops(log_path: Path) -> list[str]:
    """The event loop each relay process says it runs (its "relay listening" log line)."""
    loops = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "loop" in record:
                loops.append(str(record["loop"]))
    return loops


_METRIC = re.compile(r"^rtclab_lb_(drops|flows|packets)(?:_total)?(?:\{([^}]*)\})? (\S+)$")


def _relay_counters(url: str) -> dict[str, Any]:
    """Drops by reason, flows, and packets by direction/kind from the relay's /metrics.

    Summed over workers; with --workers, also each worker's flows and the
    client datagrams it forwarded (``by_worker``), from the ``worker`` label.
    """
    with urllib.request.urlopen(url, timeout=5.0) as response:
        return parse_relay_metrics(response.read().decode())


def parse_relay_metrics(text: str) -> dict[str, Any]:
    """The counters _relay_counters keeps, from Prometheus text (pure)."""
    found: dict[str, Any] = {"drops": {}, "packets": {}, "flows": 0.0}
    by_worker: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        name, label_text, value = match.groups()
        number = float(value)
        labels = dict(
            (part.split("=", 1)[0], part.split("=", 1)[1].strip('"'))
            for part in (label_text or "").split(",")
            if "=" in part
        )
        worker = labels.pop("worker", None)
        if worker is not None:
            mine = by_worker.setdefault(worker, {"flows": 0.0, "up_packets": 0.0})
            if name == "flows":
                mine["flows"] += number
            elif name == "packets" and labels.get("direction") == "up":
                mine["up_packets"] += number
        if name == "flows":
            found["flows"] += number
        elif number:
            key = ",".join(labels.values())
            found[name][key] = found[name].get(key, 0.0) + number
    if by_worker:
        found["by_worker"] = by_worker
    return found


@contextlib.contextmanager
def nginx(ctx: Context, spec: PathSpec) -> Iterator[Running]:
    """nginx's stream UDP proxy, as a foreground process with its own files."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    module = next((m for m in _NGINX_STREAM_MODULES if Path(m).exists()), None)
    if not Path(binary).exists() or module is None:
        raise PathUnavailable(
            "needs nginx and its stream module: apt-get install nginx libnginx-mod-stream"
        )
    port = free_port(socket.SOCK_DGRAM)
    prefix = ctx.workdir / f"nginx-{spec.key}"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(module, prefix, port, ctx.sink_port, spec.workers))
    log_path = prefix / "stderr.log"
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    with log_path.open("wb") as log:
        proc = spawn(argv, cpu=ctx.forwarder_cpu, log=log)
    try:
        wait_until(lambda: len(children(proc.pid)) >= spec.workers, proc, "nginx")
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        # The master forks its workers in order; each reads its own reuseport socket.
        workers = sorted(children(proc.pid))
        cores = _pin_workers(workers, spec, ctx)
        processes = [
            # The master only supervises; sum it in anyway so nothing is hidden.
            Proc(proc.pid, "master", ctx.forwarder_cpu),
            *(
                Proc(w, f"worker {i}", cpu)
                for i, (w, cpu) in enumerate(zip(workers, cores, strict=True))
            ),
        ]
        yield Running(
            spec.label("nginx"),
            ("127.0.0.1", port),
            processes=processes,
            facts={
                "version": version.removeprefix("nginx version: "),
                "config": conf.read_text(),
            },
            readers=find_readers(processes, port),
        )
    except Exception:
        print(tail(prefix / "error.log"), tail(log_path), flush=True)
        raise
    finally:
        stop(proc)


def _nginx_conf(module: str, prefix: Path, port: int, sink_port: int, workers: int) -> str:
    # multi_accept: without it nginx 1.22 reads ONE datagram per epoll wakeup on a
    # UDP listener; with it, until the socket is empty (about 10 % less CPU per
    # datagram here), which is how one would run it as a UDP proxy.
    # proxy_responses is left unlimited: with "proxy_responses 1" nginx ends a
    # session as soon as every datagram got its answer, so the echo test would
    # open a new upstream socket per request instead of measuring a long-lived flow.
    # The 4 MiB socket buffers match what the relay and the sink ask for.
    # reuseport gives each worker its own socket on the port, which the kernel
    # spreads flows over as it does for the relay's --workers.
    return f"""# generated by relay_throughput.py
load_module {module};
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
stream {{
    server {{
        listen 127.0.0.1:{port} udp reuseport rcvbuf=4m sndbuf=4m;
        proxy_pass 127.0.0.1:{sink_port};
        proxy_timeout 3600s;
    }}
}}
"""


@contextlib.contextmanager
def nftables(ctx: Context, _spec: PathSpec) -> Iterator[Running]:
    """The kernel: a DNAT rule (conntrack undoes it for the replies); no process at all."""
    nft = shutil.which("nft")
    if nft is None:
        raise PathUnavailable("needs nft: apt-get install nftables")
    port = free_port(socket.SOCK_DGRAM)
    table = "rtclab_bench"
    ruleset = f"""table ip {table} {{
    chain output {{
        type nat hook output priority -100; policy accept;
        ip daddr 127.0.0.1 udp dport {port} dnat to 127.0.0.1:{ctx.sink_port}
    }}
}}
"""
    done = subprocess.run([nft, "-f", "-"], input=ruleset, capture_output=True, text=True)
    if done.returncode != 0:
        raise PathUnavailable(f"nft refused the DNAT rule: {done.stderr.strip()}")
    try:
        yield Running(
            "kernel (nftables DNAT)",
            ("127.0.0.1", port),
            facts={"ruleset": ruleset, "note": "runs in the sender's context: no CPU of its own"},
        )
    finally:
        subprocess.run([nft, "delete", "table", "ip", table], capture_output=True)


# Paths that work on each datagram inside the sender's own send calls (netfilter
# NAT): they have no process to measure, and would see a GSO batch as one packet,
# so the generator sends them one datagram at a time.
SENDER_CONTEXT_PATHS = frozenset({"nftables"})

PATHS: dict[str, Starter] = {
    "direct": direct,
    "asyncio": stun_lb("asyncio"),
    "uvloop": stun_lb("uvloop"),
    "uvloop-encap": stun_lb("uvloop", forward="encap"),
    "nginx": nginx,
    "nftables": nftables,
}
