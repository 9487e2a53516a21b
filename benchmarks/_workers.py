"""The --workers axis: the paths it adds, where their processes run, what they show (pure).

A forwarder with N worker processes has N sockets on its one public port
(SO_REUSEPORT); the kernel hashes each client's address and port onto one of
them, so each worker serves a share of the flows.  The machine has two cores
and the generator + sink needs one, so two workers can only be placed in two
ways, and neither measures scaling:

* ``one-core``: every worker on the forwarder's core.  Nothing runs beside
  the generator; what changes against one worker is the cost of being
  several processes (two wake-ups, two socket queues, context switches).
  It measures overhead.
* ``spread``: worker i on the forwarder's core when i is even, on the
  generator's core when odd.  The odd workers compete with the generator
  (which busy-polls its pacing clock, so it is always runnable) for that
  core.  It measures contention: what a second worker gets from a core that
  is not free, and what that costs the generator.

Scaling needs a free core for each worker: ``free-cores`` spreads the
workers over every allowed core but the generator's, and so needs three
cores or more; it is not in the default set.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The forwarders that take the axis: the relay on its default loop, and the
# anchor with as many worker processes (the fair comparison).
WORKER_AXIS = ("uvloop", "nginx")
PLACEMENTS = ("one-core", "spread", "free-cores")
# free-cores needs more cores than the machines this benchmark was written on.
DEFAULT_PLACEMENTS = ("one-core", "spread")
# Roles of a path's processes that forward datagrams (the rest supervise).
_FORWARDING_ROLES = ("relay", "worker")


@dataclass(frozen=True)
class PathSpec:
    """One path to measure: a forwarder, how many workers, and where they run."""

    kind: str  # a --paths name
    workers: int = 1
    placement: str | None = None  # only with workers > 1

    @property
    def key(self) -> str:
        """The path's name in results.json and the per-round tables."""
        if self.workers == 1:
            return self.kind
        return f"{self.kind}-x{self.workers}-{self.placement}"

    def label(self, base: str) -> str:
        """The row label: the forwarder's own name, then the workers and their placement."""
        if self.workers == 1:
            return base
        return f"{base} x{self.workers}, {self.placement}"


def expand(
    kinds: Sequence[str], workers: Iterable[int], placements: Sequence[str]
) -> list[PathSpec]:
    """The paths of a round, in order: each forwarder, then its multi-worker variants.

    One worker is always measured: nginx with one worker is the anchor of every
    ratio, and each forwarder's own one-worker run is what its variants are
    compared with.
    """
    counts = sorted(set(workers) - {1})
    specs = []
    for kind in kinds:
        specs.append(PathSpec(kind))
        if kind in WORKER_AXIS:
            specs += [PathSpec(kind, n, p) for n in counts for p in placements]
    return specs


def worker_cores(
    spec: PathSpec, forwarder_cpu: int, generator_cpu: int, cpus: Sequence[int] = ()
) -> list[int]:
    """The core each worker is pinned to (the supervising process stays on the forwarder's).

    ``cpus`` are the cores the run may use; free-cores takes every one of them
    but the generator's, the forwarder's first, round-robin.
    """
    if spec.placement == "spread":
        cores = [forwarder_cpu, generator_cpu]
    elif spec.placement == "free-cores":
        cores = [forwarder_cpu, *(c for c in cpus if c not in (forwarder_cpu, generator_cpu))]
    else:
        cores = [forwarder_cpu]
    return [cores[i % len(cores)] for i in range(spec.workers)]


def is_forwarding(role: str) -> bool:
    return role.split(" ")[0] in _FORWARDING_ROLES


# --- what the workers did ------------------------------------------------------------


def round_figures(
    paths: dict[str, Any], rows: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """One round's per-worker figures for every path of a forwarder on the axis.

    ``paths`` are the round's raw results, ``rows`` its summary rows (max rate
    and CPU per datagram); each multi-worker path is compared with the same
    forwarder's one-worker path of the same round.
    """
    figures = {}
    for key, result in paths.items():
        spec = result.get("spec")
        if not spec or spec["kind"] not in WORKER_AXIS:
            continue
        base = rows.get(spec["kind"], {})
        row = rows[key]
        figures[key] = {
            "kind": spec["kind"],
            "workers": spec["workers"],
            "placement": spec["placement"],
            "pps_ratio_to_1_worker": _ratio(row["max_pps"], base.get("max_pps")),
            "cpu_ratio_to_1_worker": _ratio(
                row["cpu_us_per_packet"], base.get("cpu_us_per_packet")
            ),
            "equal_load_cpu_ratio_to_1_worker": _ratio(
                row.get("equal_load_cpu_us_per_packet"), base.get("equal_load_cpu_us_per_packet")
            ),
            **_process_figures(result),
        }
    return figures


def _process_figures(result: dict[str, Any]) -> dict[str, Any]:
    processes = result.get("processes", [])
    steps = result["steps"]
    passing = [s for s in steps if s["passed"]]
    best = max(passing, key=lambda s: s["achieved_pps"], default=None)
    flows = result.get("flows_by_process", {})
    datagrams = _datagrams_by_worker(result.get("forwarder_counters"))
    total_flows = sum(flows.values())
    total_datagrams = sum(datagrams.values())
    workers = []
    for proc in processes:
        role = proc["role"]
        if not is_forwarding(role):
            continue
        cpu_at_max = best["cpu_s_by_process"].get(role) if best else None
        total_at_max = sum(best["cpu_s_by_process"].values()) if best else 0.0
        elapsed = (best["send_seconds"] + best["drain_active_seconds"]) if best else 0.0
        workers.append(
            {
                "role": role,
                "cpu": proc["cpu"],
                "flows": flows.get(role),
                "flow_share": flows.get(role, 0) / total_flows if total_flows else None,
                "datagram_share": (
                    datagrams[role] / total_datagrams
                    if total_datagrams and role in datagrams
                    else None
                ),
                "cpu_share_at_max": (
                    cpu_at_max / total_at_max if cpu_at_max is not None and total_at_max else None
                ),
                "busy_at_max": cpu_at_max / elapsed if cpu_at_max is not None and elapsed else None,
                "socket_drops": sum(s.get("drops_by_process", {}).get(role, 0) for s in steps),
            }
        )
    supervisor_s = sum(
        seconds
        for step in steps
        for role, seconds in step.get("cpu_s_by_process", {}).items()
        if not is_forwarding(role)
    )
    all_s = sum(sum(step.get("cpu_s_by_process", {}).values()) for step in steps)
    shares = [w["flow_share"] for w in workers if w["flow_share"] is not None]
    return {
        "per_worker": workers,
        "busiest_flow_share": max(shares) if len(shares) > 1 else None,
        "supervisor_cpu_s": supervisor_s if len(processes) > 1 else None,
        "supervisor_cpu_share": supervisor_s / all_s if len(processes) > 1 and all_s else None,
    }


def _datagrams_by_worker(counters: dict[str, Any] | None) -> dict[str, float]:
    """Client datagrams each relay worker forwarded (its /metrics), by role; {} for nginx."""
    if not counters or "by_worker" not in counters:
        return {}
    return {
        f"worker {index}": figures.get("up_packets", 0.0)
        for index, figures in counters["by_worker"].items()
    }


def summarise(per_round: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per path on the axis: medians over rounds of the ratios, shares and supervisor CPU."""
    keys = list(dict.fromkeys(key for figures in per_round for key in figures))
    summary = {}
    for key in keys:
        values = [figures[key] for figures in per_round if key in figures]
        first = values[0]
        summary[key] = {
            "kind": first["kind"],
            "workers": first["workers"],
            "placement": first["placement"],
            "cores": [w["cpu"] for w in first["per_worker"]],
            "rounds": len(values),
        }
        for name in (
            "pps_ratio_to_1_worker",
            "cpu_ratio_to_1_worker",
            "equal_load_cpu_ratio_to_1_worker",
            "busiest_flow_share",
            "supervisor_cpu_s",
            "supervisor_cpu_share",
        ):
            present = [v[name] for v in values if v[name] is not None]
            summary[key][name] = statistics.median(present) if present else None
            summary[key][name + "_spread"] = [min(present), max(present)] if present else None
    return summary


def _ratio(value: float | None, anchor: float | None) -> float | None:
    if value is None or not anchor:
        return None
    return value / anchor
