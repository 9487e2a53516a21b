#!/usr/bin/env python3
"""Relay throughput and latency: stun_lb on asyncio and uvloop, 1 and 2 workers, against nginx.

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
rule) where nft is installed.  stun_lb on uvloop and nginx are also measured
with several worker processes on the one port (SO_REUSEPORT; --workers),
placed on the forwarder's core alone or spread over both cores (--placement).

The generator and the sink are one small C program (udpblast.c, compiled here
with the machine's gcc) pinned to one core; the forwarder runs alone on the
other.  Everything runs in a private network namespace (unshare --net), so no
datagram leaves loopback and no port collides with anything else on the host.
"""

from __future__ import annotations

import argparse
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

from _forwarders import Context, PathUnavailable
from _machine import busy_processes, machine_facts
from _measure import measure_path
from _procs import free_port
from _report import render_markdown, render_table
from _summary import summarise
from _udpblast import compile_blaster
from _workers import DEFAULT_PLACEMENTS, PLACEMENTS, WORKER_AXIS, expand

_NETNS_MARK = "RTCLAB_BENCH_IN_NETNS"
PATH_ORDER = ("direct", "asyncio", "uvloop", "uvloop-encap", "nginx", "nftables")


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
        help="A smoke run of a few seconds per path (about 40 s for all of them): 0.5 s "
        "steps, 3 search steps, 0.5 s of latency, 1 round.  Numbers are rough; use it to "
        "check the set-up.",
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
        "--workers",
        default="1,2",
        metavar="N,...",
        help="Comma-separated worker-process counts for the forwarders that have them "
        f"(the paths {' and '.join(WORKER_AXIS)}; each count above 1 adds one path per "
        "--placement): N processes on the one public port with "
        "SO_REUSEPORT (the relay's --workers N; nginx's worker_processes N + reuseport), "
        "the kernel hashing each flow onto one.  CPU per datagram sums every process of the "
        "path (the relay's supervising parent and nginx's master too).  1 is always "
        "measured: nginx with one worker is the anchor of every ratio.  [default: %(default)s]",
    )
    parser.add_argument(
        "--placement",
        default=",".join(DEFAULT_PLACEMENTS),
        metavar="WHERE,...",
        help="Where the workers of a multi-worker path run (each placement is its own path). "
        "one-core: all on the forwarder's core, beside nothing: measures the overhead of "
        "several processes, not scaling.  spread: alternately on the forwarder's core and "
        "the generator's, so a second worker competes with the generator (which busy-polls): "
        "measures contention.  free-cores: over every core but the generator's, the "
        "forwarder's first: measures scaling, and needs 3 or more cores (one per worker "
        "plus the generator's).  With 2 cores no placement measures scaling. "
        "[default: %(default)s]",
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
        "--equal-pps",
        type=float,
        default=100_000.0,
        help="Rate of one more step for every forwarder, the same for all: CPU per datagram "
        "at each forwarder's own maximum compares them at different loads (and falls as the "
        "rate rises: fewer wake-ups per datagram), this compares them at one, e.g. one worker "
        "against two.  Keep it below every forwarder's maximum. [default: 100000]",
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
        help="Core for the forwarder, alone (a spread path puts every odd-numbered worker "
        "on the generator's core instead). [default: the second allowed core]",
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
    kinds = [p for p in PATH_ORDER if p in paths or p == "direct"]
    try:
        workers = {int(w) for w in args.workers.split(",") if w.strip()}
    except ValueError:
        parser.error(f"--workers takes comma-separated numbers, not {args.workers!r}")
    placements = [p.strip() for p in args.placement.split(",") if p.strip()]
    if not workers or min(workers) < 1:
        parser.error("--workers needs numbers >= 1")
    if not placements or set(placements) - set(PLACEMENTS):
        parser.error(f"--placement takes {', '.join(PLACEMENTS)}")
    args.workers = sorted(workers | {1})
    args.placement = [p for p in PLACEMENTS if p in placements]
    args.paths = expand(kinds, args.workers, args.placement)
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


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    for spec in args.paths:
        if spec.key in skipped or spec.kind in skipped:
            continue
        try:
            result = measure_path(spec, ctx, binary, args, ceiling)
        except PathUnavailable as exc:
            _log(f"== {spec.key}: skipped: {exc}")
            skipped[spec.kind] = str(exc)
            continue
        found["paths"][spec.key] = result
        if spec.kind == "direct":
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
    free = [c for c in allowed if c != gen_cpu]
    if "free-cores" in args.placement and len(free) < 2:
        raise SystemExit(
            f"--placement free-cores needs 2 or more cores besides the generator's; "
            f"this run may use {len(allowed)} in all"
        )
    args.generator_cpu, args.forwarder_cpu = gen_cpu, fwd_cpu
    os.sched_setaffinity(0, {gen_cpu})
    report: dict[str, Any] = {
        # 2: multi-worker paths (spec, processes, per-process CPU and drops per step).
        "schema": 2,
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
            "equal_pps": args.equal_pps,
            "latency_seconds": args.latency_seconds,
            "generator_cpu": gen_cpu,
            "forwarder_cpu": fwd_cpu,
            "workers": args.workers,
            "placements": args.placement,
            "paths": [spec.key for spec in args.paths],
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
            generator_cpu=gen_cpu,
            flows=args.flows,
            cpus=tuple(allowed),
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
