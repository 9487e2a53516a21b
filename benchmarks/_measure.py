"""One path measured: start it, prime its flows, search its maximum rate, time round trips."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from _forwarders import (
    PATHS,
    SENDER_CONTEXT_PATHS,
    Context,
    Running,
    flows_by_process,
)
from _search import Probe, RateSearch
from _steps import DISTURBED_RETRIES, disturbed, echo_step, oneway_step, step_line
from _udpblast import Blaster, priming_requests
from _workers import PathSpec

# The rate at which the kernel path's NAT cost is measured: well within what the
# generator sends one datagram at a time, so both steps run paced alike.
NAT_PROBE_PPS = 100_000.0
# Low enough for every path, high enough to reach each flow several times.
WARMUP_PPS = 2000.0
WARMUP_MAX_S = 1.0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_path(
    spec: PathSpec, ctx: Context, binary: Path, args: argparse.Namespace, ceiling_pps: float | None
) -> dict[str, Any]:
    """Start the path, prime the flows, search its maximum rate, time round trips."""
    result: dict[str, Any] = {
        "path": spec.key,
        "spec": {"kind": spec.kind, "workers": spec.workers, "placement": spec.placement},
    }
    primes = priming_requests(ctx.secret, ctx.sink_port, args.flows)
    in_sender = spec.kind in SENDER_CONTEXT_PATHS
    if in_sender:
        # Before the path exists: its rule turns conntrack on for the namespace.
        result["reference"] = _nat_probe(None, ctx, binary, args, primes)
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(PATHS[spec.kind](ctx, spec))
        result["label"], result["facts"] = path.name, path.facts
        result["processes"] = [{"pid": p.pid, "role": p.role, "cpu": p.cpu} for p in path.processes]
        # A worker on the generator's core: the generator check treats it apart.
        result["beside_generator"] = any(p.cpu == ctx.generator_cpu for p in path.processes)
        cores = ", ".join(f"{p.role} on core {p.cpu}" for p in path.processes)
        _log(f"== {path.name}: target {path.target[0]}:{path.target[1]}; {cores or 'no process'}")
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
        result["flows_by_process"] = flows_by_process(path, ctx.sink_port)
        if len(result["flows_by_process"]) > 1:
            _log(f"  flows per process: {result['flows_by_process']}")
        if ceiling_pps is None:
            # The direct path: the generator's own limit, sending as fast as it can.
            unpaced = _oneway(path, gen, ctx, 0.0, args.step_seconds, args.loss_limit)
            result["unpaced"] = unpaced
            _log(f"  unpaced (generator capacity):\n{step_line(unpaced)}")
            ceiling_pps = unpaced["achieved_pps"] * 0.99
        result["ceiling_pps"] = ceiling_pps
        result["steps"], result["generator_limited"] = _search_max_rate(
            path, gen, ctx, args, ceiling_pps
        )
        if in_sender:
            result["nat_probe"] = _nat_probe((path, gen), ctx, binary, args, primes)
        if path.processes:
            # CPU per datagram falls as the rate rises (fewer wake-ups per
            # datagram), so each path's figure at its own maximum compares paths
            # at different loads; this step compares them all at one.
            equal = _oneway(path, gen, ctx, args.equal_pps, args.step_seconds, args.loss_limit)
            equal["purpose"] = "the same rate for every forwarder"
            result["equal_load"] = equal
            _log(f"  at {args.equal_pps:,.0f}/s, like every forwarder:\n{step_line(equal)}")
        latency = echo_step(
            path, gen, ctx.sink_port, ctx.forwarder_cpu, args.latency_pps, args.latency_seconds
        )
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
    warmup = _oneway(path, gen, ctx, WARMUP_PPS, warmup_s, args.loss_limit)
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
            step = _oneway(path, gen, ctx, rate, args.step_seconds, args.loss_limit)
            step["attempt"] = attempt
            step["disturbed"] = disturbed(step)
            steps.append(step)
            last = attempt == DISTURBED_RETRIES
            # Out of repeats, a disturbed failure still decides the search: the
            # path's maximum is then a lower bound, and the report says so.
            step["disturbed_verdict"] = step["disturbed"] and last
            note = ""
            if step["disturbed"]:
                note = "  (disturbed: no repeat left)" if last else "  (disturbed: repeated)"
            _log(step_line(step) + note)
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
        step = _oneway(path, gen, ctx, NAT_PROBE_PPS, args.step_seconds, 1.0)
        _log(f"  the same through the path:\n{step_line(step)}")
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
        step = _oneway(straight, gen, ctx, NAT_PROBE_PPS, args.step_seconds, 1.0)
    _log(f"  reference: straight to the sink, one datagram per send:\n{step_line(step)}")
    return step


def _oneway(
    path: Running, gen: Blaster, ctx: Context, rate_pps: float, seconds: float, loss_limit: float
) -> dict[str, Any]:
    return oneway_step(path, gen, ctx.sink_port, ctx.forwarder_cpu, rate_pps, seconds, loss_limit)
