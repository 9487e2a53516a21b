#!/usr/bin/env python3
"""Relay throughput and latency: stun_lb on asyncio and uvloop, against nginx, in one run.

For 200-byte RTP-shaped datagrams over 100 flows (each its own client source
port, primed with a STUN Binding request whose route token names the sink's
port), it measures for each path

* the highest rate forwarded one way (generator -> path -> sink) with less
  than 1 % loss, by a short search over offered rates, each step a few seconds;
* the forwarder's CPU time per forwarded datagram at that rate, from
  /proc/PID/stat (utime + stime) before and after the step;
* the round-trip time at a fixed moderate rate (an echoing sink; timestamps in
  the payload), and what the path adds to the direct path's.

The paths: direct (no forwarder), stun_lb on the standard library's asyncio
loop, stun_lb on uvloop, nginx's stream UDP proxy (the anchor every ratio is
taken against, measured in the same run), and the kernel (an nftables DNAT
rule) where nft is installed.

The generator and the sink are one small C program (udpblast.c, compiled here
with the machine's gcc) pinned to one core; the forwarder runs alone on the
other.  Everything runs in a private network namespace (unshare --net), so no
datagram leaves loopback and no port collides with anything else on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _forwarders import PATHS, SENDER_CONTEXT_PATHS, Context, PathUnavailable, Running
from _machine import busy_processes, machine_facts
from _procs import cpu_seconds, free_port
from _report import render_markdown, render_table
from _search import Probe, RateSearch
from _summary import summarise
from _udpblast import Blaster, compile_blaster, priming_requests, udp_drops_by_port

_NETNS_MARK = "RTCLAB_BENCH_IN_NETNS"
PATH_ORDER = ("direct", "asyncio", "uvloop", "nginx", "nftables")
# A failing step at which the forwarder used less than this share of its core
# was disturbed (see _disturbed); it is repeated at most this many times.
DISTURBED_BUSY = 0.80
DISTURBED_RETRIES = 2
# The rate at which the kernel path's NAT cost is measured: well within what the
# generator sends one datagram at a time, so both steps run paced alike.
NAT_PROBE_PPS = 100_000.0
# Low enough for every path, high enough to reach each flow several times.
WARMUP_PPS = 2000.0
WARMUP_MAX_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Runs as root (it creates a network namespace and, for the kernel path, "
        "an nftables rule inside it).  Needs gcc; nginx + libnginx-mod-stream for the "
        "anchor; nftables for the optional kernel path.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A smoke run of a few seconds per path: 0.5 s steps, 3 search steps, 0.5 s "
        "of latency, 1 round.  Numbers are rough; use it to check the set-up.",
    )
    parser.add_argument(
        "--json",
        metavar="OUT",
        type=Path,
        help="Write every result (each step, each path, the machine) as JSON to OUT.",
    )
    parser.add_argument(
        "--markdown",
        metavar="OUT",
        type=Path,
        help="Write the report "
        "(machine, method, table) as Markdown to OUT, e.g. benchmarks/RESULTS.md. "
        "Text below the hand-written-notes marker of an existing OUT is kept.",
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATH_ORDER),
        help="Comma-separated paths to measure, from: %(default)s.  direct is always "
        "measured (it is the latency baseline and the generator's proof).  [default: all]",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="Measure every path this many times, interleaved, and report medians (and the "
        "spread): on a shared machine the load changes from minute to minute. "
        "[default: 3; --quick: 1]",
    )
    parser.add_argument(
        "--flows",
        type=int,
        default=100,
        help="Client flows, each its own source port and relay flow. [default: 100]",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=200,
        help="UDP payload bytes per datagram (32..2048). [default: 200]",
    )
    parser.add_argument(
        "--step-seconds", type=float, help="Length of each one-way step. [default: 3; --quick: 0.5]"
    )
    parser.add_argument(
        "--search-steps",
        type=int,
        help="Most one-way steps per path in the rate search. [default: 8; --quick: 3]",
    )
    parser.add_argument(
        "--loss-limit",
        type=float,
        default=0.01,
        help="A step passes when it loses less than this fraction. [default: 0.01]",
    )
    parser.add_argument(
        "--latency-pps",
        type=float,
        default=10000.0,
        help="Total request rate of the round-trip test. [default: 10000]",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="Length of the round-trip test. [default: 5; --quick: 0.5]",
    )
    parser.add_argument(
        "--generator-cpu",
        type=int,
        help="Core for the generator + sink (and this script). [default: the first allowed core]",
    )
    parser.add_argument(
        "--forwarder-cpu",
        type=int,
        help="Core for the forwarder, alone. [default: the second allowed core]",
    )
    parser.add_argument(
        "--sends",
        choices=("gso", "sendmmsg"),
        default="gso",
        help="How the generator sends a batch to a flow: one UDP GSO send that the kernel "
        "splits into datagrams on delivery (about 3x the rate of the other), or sendmmsg, "
        "one datagram at a time through the whole stack.  The forwarder reads single "
        "datagrams either way; the kernel path always gets sendmmsg. [default: gso]",
    )
    parser.add_argument(
        "--no-netns",
        action="store_true",
        help="Run in the current network namespace (still loopback only) instead "
        "of a private one; for machines where unshare is not permitted.",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.step_seconds = args.step_seconds or (0.5 if quick else 3.0)
    args.search_steps = args.search_steps or (3 if quick else 8)
    args.latency_seconds = args.latency_seconds or (0.5 if quick else 5.0)
    args.rounds = args.rounds or (1 if quick else 3)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - set(PATH_ORDER))
    if unknown:
        parser.error(f"unknown paths {unknown}; choose from {', '.join(PATH_ORDER)}")
    args.paths = [p for p in PATH_ORDER if p in paths or p == "direct"]
    if args.flows < 1 or not 32 <= args.size <= 2048 or min(args.search_steps, args.rounds) < 1:
        parser.error("need --flows >= 1, 32 <= --size <= 2048, --search-steps and --rounds >= 1")
    return args


# --- the network namespace -----------------------------------------------------


def enter_private_netns() -> None:
    """Re-run this script under ``unshare --net`` (same process, new namespace); lo up."""
    if os.environ.get(_NETNS_MARK) != "1":
        unshare = shutil.which("unshare")
        if unshare is None:
            sys.exit("needs unshare (util-linux), or --no-netns")
        os.environ[_NETNS_MARK] = "1"
        sys.stdout.flush()
        # unshare execs the command in its own process: same pid, same terminal.
        os.execv(unshare, [unshare, "--net", "--", sys.executable, *sys.argv])
    _loopback_up()


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


# --- steps ---------------------------------------------------------------------


def oneway_step(
    path: Running, gen: Blaster, sink_port: int, rate_pps: float, seconds: float, loss_limit: float
) -> dict[str, Any]:
    drops_before = udp_drops_by_port()
    cpu_before = cpu_seconds(path.pids)
    step = gen.oneway(rate_pps, seconds)
    cpu = cpu_seconds(path.pids) - cpu_before
    step["kernel_drops"] = _drops_since(drops_before, path, sink_port)
    step["sends"] = gen.sends
    sent, received = step["sent"], step["sink_received"]
    step["loss"] = 1.0 - received / sent if sent else 1.0
    step["delivered_pps"] = received / step["send_seconds"] if step["send_seconds"] else 0.0
    step["forwarder_cpu_s"] = cpu if path.pids else None
    step["cpu_us_per_packet"] = cpu * 1e6 / received if path.pids and received else None
    # Share of its core the forwarder used: near 1 at a loss means it ran out of
    # CPU; well below 1 means it lost datagrams for another reason.
    elapsed = step["send_seconds"] + step["drain_active_seconds"]
    step["forwarder_busy"] = cpu / elapsed if path.pids and elapsed else None
    step["loss_limit"] = loss_limit
    step["passed"] = step["loss"] < loss_limit
    return step


def echo_step(
    path: Running, gen: Blaster, sink_port: int, rate_pps: float, seconds: float
) -> dict[str, Any]:
    drops_before = udp_drops_by_port()
    cpu_before = cpu_seconds(path.pids)
    step = gen.echo(rate_pps, seconds)
    cpu = cpu_seconds(path.pids) - cpu_before
    step["kernel_drops"] = _drops_since(drops_before, path, sink_port)
    # Each request crosses the forwarder once each way.
    forwarded = step["sink_received"] + step["replies"]
    step["lost"] = step["sent"] - step["replies"]
    step["forwarder_cpu_s"] = cpu if path.pids else None
    step["cpu_us_per_packet"] = cpu * 1e6 / forwarded if path.pids and forwarded else None
    return step


def _disturbed(step: dict[str, Any]) -> bool:
    """A loss while the forwarder had time to spare: its core was taken from it.

    A forwarder that cannot keep up runs flat out (about 90-100 % of its core
    here); one that loses datagrams while using much less was not running when
    its receive buffer filled up: a neighbour on the machine, or the host.
    Such a step says nothing about the forwarder and is repeated.
    """
    busy = step.get("forwarder_busy")
    return bool(not step["passed"] and busy is not None and busy < DISTURBED_BUSY)


def _drops_since(before: dict[int, int], path: Running, sink_port: int) -> dict[str, int]:
    after = udp_drops_by_port()
    delta = {port: after.get(port, 0) - before.get(port, 0) for port in after}
    forwarder_port = path.target[1] if path.target[1] != sink_port else None
    forwarder = delta.get(forwarder_port, 0) if forwarder_port else 0
    sink = delta.get(sink_port, 0)
    return {
        "forwarder_socket": forwarder,
        "sink_socket": sink,
        "other_sockets": sum(delta.values()) - forwarder - sink,
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _step_line(step: dict[str, Any]) -> str:
    cpu = step.get("cpu_us_per_packet")
    busy = step.get("forwarder_busy")
    drops = step["kernel_drops"]
    return (
        f"    offered {step['offered_pps']:>10,.0f}/s  sent {step['achieved_pps']:>10,.0f}/s  "
        f"delivered {step['delivered_pps']:>10,.0f}/s  loss {step['loss'] * 100:6.2f}%  "
        f"cpu {'-' if cpu is None else f'{cpu:.2f} us/pkt':>12} "
        f"{'' if busy is None else f'busy {busy:4.0%}'}  "
        f"drops fwd/sink {drops['forwarder_socket']}/{drops['sink_socket']}  "
        f"{'pass' if step['passed'] else 'FAIL'}"
    )


# --- one path --------------------------------------------------------------------


def measure_path(
    name: str, ctx: Context, binary: Path, args: argparse.Namespace, ceiling_pps: float | None
) -> dict[str, Any]:
    """Start the path, prime the flows, search its maximum rate, time round trips."""
    result: dict[str, Any] = {"path": name}
    primes = priming_requests(ctx.secret, ctx.sink_port, args.flows)
    in_sender = name in SENDER_CONTEXT_PATHS
    if in_sender:
        # Before the path exists: its rule turns conntrack on for the namespace.
        result["reference"] = _nat_probe(None, ctx, binary, args, primes)
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(PATHS[name](ctx))
        result["label"], result["facts"] = path.name, path.facts
        _log(f"== {path.name}: target {path.target[0]}:{path.target[1]}")
        gen = stack.enter_context(
            Blaster(
                binary,
                path.target,
                ctx.sink_port,
                primes,
                size=args.size,
                cpu=args.generator_cpu,
                workdir=ctx.workdir,
                sends="sendmmsg" if in_sender else args.sends,
            )
        )
        result["generator_sends"] = gen.sends
        result["warmup"] = _prime_and_warm_up(path, gen, ctx, args)
        if ceiling_pps is None:
            # The direct path: the generator's own limit, sending as fast as it can.
            unpaced = oneway_step(path, gen, ctx.sink_port, 0.0, args.step_seconds, args.loss_limit)
            result["unpaced"] = unpaced
            _log(f"  unpaced (generator capacity):\n{_step_line(unpaced)}")
            ceiling_pps = unpaced["achieved_pps"] * 0.99
        result["ceiling_pps"] = ceiling_pps
        result["steps"], result["generator_limited"] = _search_max_rate(
            path, gen, ctx, args, ceiling_pps
        )
        if in_sender:
            result["nat_probe"] = _nat_probe((path, gen), ctx, binary, args, primes)
        latency = echo_step(path, gen, ctx.sink_port, args.latency_pps, args.latency_seconds)
        result["latency"] = latency
        rtt = latency["rtt_us"]
        _log(
            f"  round trip at {args.latency_pps:,.0f}/s: p50 {rtt['p50']:.1f} us, "
            f"p99 {rtt['p99']:.1f} us, lost {latency['lost']}"
        )
        if path.counters is not None:
            result["forwarder_counters"] = path.counters()
    return result


def _prime_and_warm_up(
    path: Running, gen: Blaster, ctx: Context, args: argparse.Namespace
) -> dict[str, Any]:
    """Open every flow, then check each one reaches the sink."""
    primed = gen.prime()
    if primed["primed"] < args.flows:
        raise RuntimeError(f"{path.name}: only {primed['primed']} of {args.flows} flows primed")
    warmup_s = min(WARMUP_MAX_S, args.step_seconds)
    warmup = oneway_step(path, gen, ctx.sink_port, WARMUP_PPS, warmup_s, args.loss_limit)
    if warmup["flows_seen"] < args.flows or warmup["loss"] > 0.001:
        raise RuntimeError(
            f"{path.name}: warm-up reached {warmup['flows_seen']} of {args.flows} flows with "
            f"{warmup['loss']:.2%} loss; the path does not forward every flow"
        )
    return warmup


def _search_max_rate(
    path: Running, gen: Blaster, ctx: Context, args: argparse.Namespace, ceiling_pps: float
) -> tuple[list[dict[str, Any]], bool]:
    """The steps of the rate search, and whether the path kept up with the ceiling."""
    search = RateSearch(ceiling_pps, args.loss_limit)
    steps: list[dict[str, Any]] = []
    for _ in range(args.search_steps):
        rate = search.next_rate()
        for attempt in range(1 + DISTURBED_RETRIES):
            step = oneway_step(path, gen, ctx.sink_port, rate, args.step_seconds, args.loss_limit)
            step["attempt"] = attempt
            step["disturbed"] = _disturbed(step)
            steps.append(step)
            _log(_step_line(step) + ("  (disturbed: repeated)" if step["disturbed"] else ""))
            if not step["disturbed"]:
                break
        search.record(
            Probe(step["offered_pps"], step["achieved_pps"], step["loss"], step["delivered_pps"])
        )
        if search.done:
            break
    return steps, search.ceiling_passed


def _nat_probe(
    through: tuple[Running, Blaster] | None,
    ctx: Context,
    binary: Path,
    args: argparse.Namespace,
    primes: list[bytes],
) -> dict[str, Any]:
    """The generator at NAT_PROBE_PPS, one datagram per send: through a path, or straight.

    Straight to the sink (``through`` None) before the kernel path exists, then
    through it: NAT runs inside the sender's send calls, so the difference in
    time spent in them per datagram is what NAT and conntrack cost.
    """
    if through is not None:
        path, gen = through
        step = oneway_step(path, gen, ctx.sink_port, NAT_PROBE_PPS, args.step_seconds, 1.0)
        _log(f"  the same through the path:\n{_step_line(step)}")
        return step
    straight = Running("reference", ("127.0.0.1", ctx.sink_port))
    with Blaster(
        binary,
        straight.target,
        ctx.sink_port,
        primes,
        size=args.size,
        cpu=args.generator_cpu,
        workdir=ctx.workdir,
        sends="sendmmsg",
    ) as gen:
        gen.prime()
        step = oneway_step(straight, gen, ctx.sink_port, NAT_PROBE_PPS, args.step_seconds, 1.0)
    _log(f"  reference: straight to the sink, one datagram per send:\n{_step_line(step)}")
    return step


# --- the run -----------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> NoReturn:
    # Unwinds every context manager: each started process is stopped.
    raise SystemExit(128 + signum)


def run_round(
    args: argparse.Namespace, ctx: Context, binary: Path, skipped: dict[str, str]
) -> dict[str, Any]:
    """Every path once, direct first (its maximum is the others' ceiling)."""
    found: dict[str, Any] = {"load_before": os.getloadavg(), "paths": {}}
    ceiling: float | None = None
    for name in args.paths:
        if name in skipped:
            continue
        try:
            result = measure_path(name, ctx, binary, args, ceiling)
        except PathUnavailable as exc:
            _log(f"== {name}: skipped: {exc}")
            skipped[name] = str(exc)
            continue
        found["paths"][name] = result
        if name == "direct":
            best = max(
                (s for s in result["steps"] if s["passed"]),
                key=lambda s: s["achieved_pps"],
                default=None,
            )
            if best is None:
                raise RuntimeError("the direct path lost >= the loss limit at every rate")
            ceiling = best["achieved_pps"]
    found["load_after"] = os.getloadavg()
    return found


def _loadavg() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def run(args: argparse.Namespace) -> dict[str, Any]:
    allowed = sorted(os.sched_getaffinity(0))
    gen_cpu = args.generator_cpu if args.generator_cpu is not None else allowed[0]
    fwd_cpu = args.forwarder_cpu if args.forwarder_cpu is not None else allowed[-1]
    if gen_cpu == fwd_cpu:
        raise SystemExit("needs two cores: one for the generator + sink, one for the forwarder")
    args.generator_cpu, args.forwarder_cpu = gen_cpu, fwd_cpu
    os.sched_setaffinity(0, {gen_cpu})
    report: dict[str, Any] = {
        "schema": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {
            "quick": args.quick,
            "rounds": args.rounds,
            "generator_sends": args.sends,
            "flows": args.flows,
            "size_bytes": args.size,
            "step_seconds": args.step_seconds,
            "search_steps": args.search_steps,
            "loss_limit": args.loss_limit,
            "latency_pps": args.latency_pps,
            "latency_seconds": args.latency_seconds,
            "generator_cpu": gen_cpu,
            "forwarder_cpu": fwd_cpu,
            "network_namespace": "current" if args.no_netns else "private",
            "interfaces": [name for _, name in socket.if_nameindex()],
        },
        "machine": machine_facts(),
        "load_before": {"loadavg": os.getloadavg(), "busy_processes": busy_processes()},
        "rounds": [],
        "skipped": {},
    }
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        workdir = Path(tmp)
        binary = compile_blaster(workdir)
        ctx = Context(
            workdir=workdir,
            sink_port=free_port(socket.SOCK_DGRAM),
            secret=secrets.token_hex(16),
            forwarder_cpu=fwd_cpu,
            flows=args.flows,
        )
        for number in range(1, args.rounds + 1):
            _log(f"=== round {number} of {args.rounds} (load average {_loadavg()})")
            report["rounds"].append(run_round(args, ctx, binary, report["skipped"]))
    report["load_after"] = {"loadavg": os.getloadavg(), "busy_processes": busy_processes()}
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["summary"] = summarise(report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        _log("warning: not root; the namespace, pinning and nftables may fail")
    if not args.no_netns:
        enter_private_netns()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = time.monotonic()
    report = run(args)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print(render_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        _log(f"wrote {args.json}")
    if args.markdown:
        previous = args.markdown.read_text() if args.markdown.exists() else ""
        args.markdown.write_text(render_markdown(report, previous))
        _log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _log("interrupted; every process this benchmark started has been stopped")
        sys.exit(130)
