"""The paths under test, each a context manager that starts it and cleans it up.

A path is what sits between the generator's flow sockets and the sink: nothing
(direct), the relay on one event loop or the other, nginx's stream UDP proxy,
or the kernel (nftables DNAT).  Every process runs on the forwarder's core
(see _procs).
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

from _procs import children, free_port, spawn, stop, tail, wait_until

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
    flows: int


@dataclass
class Running:
    """A started path: where the generator sends, and what to measure."""

    name: str
    target: tuple[str, int]
    # Processes whose CPU time is the forwarder's (empty: none, or in-kernel).
    pids: list[int] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # Forwarder-side counters to keep with the results (the relay's /metrics).
    counters: Callable[[], dict[str, Any]] | None = None


class PathUnavailable(RuntimeError):
    """The path cannot run on this machine (a tool is missing); it is skipped."""


# --- the paths ---------------------------------------------------------------


@contextlib.contextmanager
def direct(ctx: Context) -> Iterator[Running]:
    """No forwarder: the flows send straight to the sink (the baseline)."""
    yield Running("direct", ("127.0.0.1", ctx.sink_port), facts={"forwarder": "none"})


def stun_lb(loop: str) -> Callable[[Context], contextlib.AbstractContextManager[Running]]:
    @contextlib.contextmanager
    def start(ctx: Context) -> Iterator[Running]:
        port = free_port(socket.SOCK_DGRAM)
        admin = free_port(socket.SOCK_STREAM)
        log_path = ctx.workdir / f"stun_lb-{loop}.log"
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
            # Longer than the whole benchmark: no flow may expire between steps.
            "--idle-timeout",
            "3600",
            "--max-flows",
            str(max(1000, 2 * ctx.flows)),
            "--log-level",
            "info",
        ]
        env = dict(os.environ, RTCLAB_SECRET=ctx.secret)
        with log_path.open("wb") as log:
            proc = spawn(argv, cpu=ctx.forwarder_cpu, log=log, env=env)
        try:
            base = f"http://127.0.0.1:{admin}"
            wait_until(lambda: _http_ok(base + "/healthz"), proc, f"stun_lb ({loop})")
            facts: dict[str, Any] = {"argv": argv[1:], "loop_requested": loop}
            facts["loop_running"] = _logged_loop(log_path)
            if facts["loop_running"] not in (None, loop):
                raise RuntimeError(f"asked stun_lb for {loop}, it runs {facts['loop_running']}")
            yield Running(
                f"stun_lb ({loop})",
                ("127.0.0.1", port),
                pids=[proc.pid],
                facts=facts,
                counters=lambda: _relay_counters(base + "/metrics"),
            )
        except Exception:
            print(tail(log_path), flush=True)
            raise
        finally:
            stop(proc)

    return start


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _logged_loop(log_path: Path) -> str | None:
    """The event loop the relay says it runs (its "relay listening" log line)."""
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "loop" in record:
                return str(record["loop"])
    return None


_METRIC = re.compile(r"^rtclab_lb_(drops|flows|packets)(?:_total)?(?:\{([^}]*)\})? (\S+)$")


def _relay_counters(url: str) -> dict[str, Any]:
    """Drops by reason, flows, and packets by direction/kind from the relay's /metrics."""
    with urllib.request.urlopen(url, timeout=5.0) as response:
        text = response.read().decode()
    found: dict[str, Any] = {"drops": {}, "packets": {}}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        number = float(value)
        if name == "flows":
            found["flows"] = number
        elif number:
            key = ",".join(part.split("=", 1)[1].strip('"') for part in labels.split(","))
            found[name][key] = number
    return found


@contextlib.contextmanager
def nginx(ctx: Context) -> Iterator[Running]:
    """nginx's stream UDP proxy, one worker, as a foreground process with its own files."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    module = next((m for m in _NGINX_STREAM_MODULES if Path(m).exists()), None)
    if not Path(binary).exists() or module is None:
        raise PathUnavailable(
            "needs nginx and its stream module: apt-get install nginx libnginx-mod-stream"
        )
    port = free_port(socket.SOCK_DGRAM)
    prefix = ctx.workdir / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(module, prefix, port, ctx.sink_port))
    log_path = prefix / "stderr.log"
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    with log_path.open("wb") as log:
        proc = spawn(argv, cpu=ctx.forwarder_cpu, log=log)
    try:
        wait_until(lambda: bool(children(proc.pid)), proc, "nginx")
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        yield Running(
            "nginx",
            ("127.0.0.1", port),
            # The master only supervises; sum it in anyway so nothing is hidden.
            pids=[proc.pid, *children(proc.pid)],
            facts={"version": version.removeprefix("nginx version: "), "config": conf.read_text()},
        )
    except Exception:
        print(tail(prefix / "error.log"), tail(log_path), flush=True)
        raise
    finally:
        stop(proc)


def _nginx_conf(module: str, prefix: Path, port: int, sink_port: int) -> str:
    # multi_accept: without it nginx 1.22 reads ONE datagram per epoll wakeup on a
    # UDP listener; with it, until the socket is empty (about 10 % less CPU per
    # datagram here), which is how one would run it as a UDP proxy.
    # proxy_responses is left unlimited: with "proxy_responses 1" nginx ends a
    # session as soon as every datagram got its answer, so the echo test would
    # open a new upstream socket per request instead of measuring a long-lived flow.
    # The 4 MiB socket buffers match what the relay and the sink ask for.
    return f"""# generated by relay_throughput.py
load_module {module};
daemon off;
master_process on;
worker_processes 1;
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
def nftables(ctx: Context) -> Iterator[Running]:
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

PATHS: dict[str, Callable[[Context], contextlib.AbstractContextManager[Running]]] = {
    "direct": direct,
    "asyncio": stun_lb("asyncio"),
    "uvloop": stun_lb("uvloop"),
    "nginx": nginx,
    "nftables": nftables,
}
