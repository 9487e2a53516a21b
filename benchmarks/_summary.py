"""A run's figures per path: medians over rounds, ratios to nginx, the generator check (pure)."""

from __future__ import annotations

import statistics
from typing import Any

import _workers

ANCHOR = "nginx"
# A step "kept up" when the generator sent at least this share of the offered rate.
KEPT_UP = 0.99
# The direct path must carry at least this multiple of the best forwarder's rate.
MIN_HEADROOM = 1.2


def _best_step(result: dict[str, Any]) -> dict[str, Any] | None:
    passing = [s for s in result["steps"] if s["passed"]]
    return max(passing, key=lambda s: s["achieved_pps"], default=None)


def round_rows(paths: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One round's figures per path; latency and ratios against the same round's direct/nginx."""
    direct = paths.get("direct")
    base_rtt = direct["latency"]["rtt_us"] if direct else None
    rows: dict[str, dict[str, Any]] = {}
    for name, result in paths.items():
        best = _best_step(result)
        rtt = result["latency"]["rtt_us"]
        rows[name] = {
            "label": result["label"],
            "max_pps": best["achieved_pps"] if best else 0.0,
            "cpu_us_per_packet": best["cpu_us_per_packet"] if best else None,
            "generator_limited": result["generator_limited"],
            "disturbed_steps": sum(1 for st in result["steps"] if st.get("disturbed")),
            # Failing steps still disturbed after every repeat: the maximum is a lower bound.
            "disturbed_verdicts": sum(1 for st in result["steps"] if st.get("disturbed_verdict")),
            "equal_load_cpu_us_per_packet": (result.get("equal_load") or {}).get(
                "cpu_us_per_packet"
            ),
            "rtt_p50_us": rtt["p50"],
            "rtt_p99_us": rtt["p99"],
            "rtt_p999_us": rtt["p999"],
            # The p99 of the median one-second window: what a typical second looked like.
            "rtt_p99_typical_us": median([w["p99"] for w in result["latency"]["windows_us"]]),
            "added_rtt_p50_us": rtt["p50"] - base_rtt["p50"] if base_rtt else None,
            "added_rtt_p99_us": rtt["p99"] - base_rtt["p99"] if base_rtt else None,
            "latency_cpu_us_per_packet": result["latency"]["cpu_us_per_packet"],
            "latency_lost": result["latency"]["lost"],
        }
    _derive_kernel_cost(paths, rows)
    base = rows.get("direct")
    for row in rows.values():
        row["added_rtt_p99_typical_us"] = (
            row["rtt_p99_typical_us"] - base["rtt_p99_typical_us"]
            if base and row["rtt_p99_typical_us"] is not None
            else None
        )
    anchor = rows.get(ANCHOR, {})
    for row in rows.values():
        row["pps_ratio_to_nginx"] = _ratio(row["max_pps"], anchor.get("max_pps"))
        row["cpu_ratio_to_nginx"] = _ratio(
            row["cpu_us_per_packet"], anchor.get("cpu_us_per_packet")
        )
        row["equal_load_cpu_ratio_to_nginx"] = _ratio(
            row["equal_load_cpu_us_per_packet"], anchor.get("equal_load_cpu_us_per_packet")
        )
    return rows


def _derive_kernel_cost(paths: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    """The kernel path's CPU per datagram, from the generator's send calls.

    NAT runs in the sender's context, inside its send calls.  The path sends
    at a fixed rate, one datagram per send, through the NAT rule and, just
    before, straight to the sink; the difference in time spent in the send
    calls per datagram is what NAT (and conntrack) cost.
    """
    kernel = rows.get("nftables")
    result = paths.get("nftables", {})
    if not kernel or "reference" not in result or "nat_probe" not in result:
        return
    extra_ns = (
        result["nat_probe"]["send_ns_per_datagram"] - result["reference"]["send_ns_per_datagram"]
    )
    kernel["cpu_us_per_packet"] = extra_ns / 1000.0
    kernel["cpu_derived"] = True


def _ratio(value: float | None, anchor: float | None) -> float | None:
    if value is None or not anchor:
        return None
    return value / anchor


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _spread(values: list[float | None]) -> list[float] | None:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Per path, the median over rounds of each figure (and the spread of the main two).

    A ratio is taken within a round (both numbers measured minutes apart at most)
    and then its median over rounds, so a load change between rounds moves it less.
    """
    per_round = [round_rows(r["paths"]) for r in report["rounds"]]
    names = list(dict.fromkeys(name for rows in per_round for name in rows))
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [rr[name] for rr in per_round if name in rr]
        row: dict[str, Any] = {"label": values[0]["label"], "rounds": len(values)}
        for key in values[0]:
            if key in (
                "label",
                "generator_limited",
                "latency_lost",
                "cpu_derived",
                "disturbed_steps",
                "disturbed_verdicts",
            ):
                continue
            row[key] = median([v[key] for v in values])
        row["max_pps_spread"] = _spread([v["max_pps"] for v in values])
        row["cpu_us_per_packet_spread"] = _spread([v["cpu_us_per_packet"] for v in values])
        row["generator_limited"] = any(v["generator_limited"] for v in values)
        row["cpu_derived"] = any(v.get("cpu_derived") for v in values)
        row["latency_lost"] = sum(v["latency_lost"] for v in values)
        row["disturbed_steps"] = sum(v["disturbed_steps"] for v in values)
        row["disturbed_verdicts"] = sum(v["disturbed_verdicts"] for v in values)
        row["equal_load_cpu_us_per_packet_spread"] = _spread(
            [v["equal_load_cpu_us_per_packet"] for v in values]
        )
        rows[name] = row
    rounds = list(zip(report["rounds"], per_round, strict=True))
    # Forwarders alone on their core: the direct path, with the generator alone
    # on its core too, is the proof that the generator did not limit them.
    apart = [_generator_proof(r["paths"], rr, beside=False) for r, rr in rounds]
    # Workers beside the generator take its core from it by design: for them
    # only the per-step facts (sent what was asked, sink drops) say anything.
    beside = [_generator_proof(r["paths"], rr, beside=True) for r, rr in rounds]
    worker_rounds = [_workers.round_figures(r["paths"], rr) for r, rr in rounds]
    return {
        "rows": rows,
        "per_round": per_round,
        "generator": _combine_proofs(apart),
        "generator_beside": _combine_proofs(beside)
        if any(p["forwarders"] for p in beside)
        else None,
        "workers": _workers.summarise(worker_rounds),
        "workers_per_round": worker_rounds,
    }


def _generator_proof(
    paths: dict[str, Any], rows: dict[str, dict[str, Any]], *, beside: bool
) -> dict[str, Any]:
    """One round's evidence that the generator + sink never limited a forwarder's number.

    Three facts: the direct path (same generator, same sink, no forwarder)
    goes well above the best forwarder; at each forwarder's maximum the
    generator sent what was asked, and it sent faster still at the failing
    step above it; and the datagrams lost were dropped at the forwarder's
    socket, never at the sink's.  ``beside`` picks the user-space forwarders
    with a worker on the generator's core (else those without).
    """
    direct = paths.get("direct", {})
    forwarders = {
        n: rows[n]
        for n, result in paths.items()
        if result.get("processes") and bool(result.get("beside_generator")) == beside
    }
    best_name = max(forwarders, key=lambda n: forwarders[n]["max_pps"], default=None)
    best_pps = forwarders[best_name]["max_pps"] if best_name else None
    shares: list[float] = []
    bracketed = True
    sink_drops = forwarder_drops = lost = sink_decided = 0
    for name in forwarders:
        steps = paths[name]["steps"]
        best = _best_step(paths[name])
        best_sent = best["achieved_pps"] if best else 0.0
        if best:
            shares.append(best["achieved_pps"] / best["offered_pps"])
        bracketed &= any(not s["passed"] and s["achieved_pps"] > best_sent for s in steps)
        for step in steps:
            sink_drops += step["kernel_drops"]["sink_socket"]
            forwarder_drops += step["kernel_drops"]["forwarder_socket"]
            lost += step["sent"] - step["sink_received"]
            sink_decided += _sink_decided(step)
    direct_max = rows["direct"]["max_pps"] if "direct" in rows else None
    return {
        "forwarders": list(forwarders),
        "capacity_pps": direct.get("unpaced", {}).get("achieved_pps"),
        "direct_max_pps": direct_max,
        "best_forwarder": best_name,
        "best_forwarder_pps": best_pps,
        "headroom": direct_max / best_pps if direct_max and best_pps else None,
        "min_sent_share_at_max": min(shares, default=None),
        "all_maxima_bracketed": bracketed and bool(forwarders),
        "sink_socket_drops": sink_drops,
        "forwarder_socket_drops": forwarder_drops,
        "lost": lost,
        "steps_decided_by_sink_drops": sink_decided,
    }


def _sink_decided(step: dict[str, Any]) -> bool:
    """Whether a failing step would have passed but for what the SINK dropped.

    The sink shares its core with the generator; if this process was
    descheduled long enough, the sink's buffer overflows.  Such drops are the
    generator side's, and must not be what failed a forwarder.
    """
    if step["passed"] or not step["sent"]:
        return False
    lost_elsewhere = step["sent"] - step["sink_received"] - step["kernel_drops"]["sink_socket"]
    loss_limit = step.get("loss_limit", 0.01)
    return bool(lost_elsewhere / step["sent"] < loss_limit)


def _combine_proofs(proofs: list[dict[str, Any]]) -> dict[str, Any]:
    headrooms = [p["headroom"] for p in proofs if p["headroom"] is not None]
    shares = [p["min_sent_share_at_max"] for p in proofs if p["min_sent_share_at_max"]]
    combined = {
        "rounds": proofs,
        "capacity_pps": median([p["capacity_pps"] for p in proofs]),
        "direct_max_pps": median([p["direct_max_pps"] for p in proofs]),
        # The best forwarder of each round (it may differ from round to round).
        "best_forwarder": ", ".join(
            dict.fromkeys(p["best_forwarder"] for p in proofs if p["best_forwarder"])
        )
        or None,
        "best_forwarder_pps": median([p["best_forwarder_pps"] for p in proofs]),
        "min_headroom": min(headrooms, default=None),
        "min_sent_share_at_max": min(shares, default=None),
        "all_maxima_bracketed": all(p["all_maxima_bracketed"] for p in proofs),
        "sink_socket_drops": sum(p["sink_socket_drops"] for p in proofs),
        "forwarder_socket_drops": sum(p["forwarder_socket_drops"] for p in proofs),
        "lost": sum(p["lost"] for p in proofs),
        "steps_decided_by_sink_drops": sum(p["steps_decided_by_sink_drops"] for p in proofs),
    }
    combined["not_the_bottleneck"] = bool(
        combined["min_headroom"]
        and combined["min_headroom"] >= MIN_HEADROOM
        and (combined["min_sent_share_at_max"] or 0) >= KEPT_UP
        and combined["all_maxima_bracketed"]
        and combined["steps_decided_by_sink_drops"] == 0
    )
    return combined
