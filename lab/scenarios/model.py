"""What a scenario is, as data: runs, timelines of steps, claims with verdicts.

A scenario is declarative: one or more *runs* (each a fresh stack, e.g. one
per relay ``--rebind`` policy), each with calls to start and a timeline of
steps (impair the path, rebind the caller, kill a part, restart it, drain a
media server).  The runner executes a run and returns what it saw; the
scenario's ``analyse`` turns every run's data into numbers and verdicts.
Keeping the timeline as data is what lets the same scenario run on the
loopback lab, the namespace lab or under ``--quick`` with shorter times.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Action(enum.Enum):
    IMPAIR = "impair"  # args: the netem /impair body
    REBIND = "rebind"  # args: {"mode": "port"|"address", "caller": None}
    KILL = "kill"  # args: {"part": "relay"|"media-1"|..., "signal": "SIGKILL"}
    RESTART = "restart"  # args: {"part": ...}
    DRAIN = "drain"  # args: {"media": index}
    START_CALLS = "start_calls"  # args: {"count": n, "seconds": s, "label": str}
    # args: {"per_step": n, "every_s": s, "max_calls": n, "hold_s": s, "max_loss": f,
    #        "max_gap_ms": ms}: add calls until the media servers report degradation.
    RAMP = "ramp"


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float  # seconds after the run's first call started
    action: Action
    args: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        details = ", ".join(f"{key}={value}" for key, value in self.args.items())
        return f"t={self.at_s:g}s {self.action.value}" + (f" ({details})" if details else "")


@dataclass(frozen=True, slots=True)
class CallPlan:
    count: int
    seconds: float
    stagger_s: float = 0.3  # calls starting at once measure the CPU, not the transport


@dataclass(frozen=True, slots=True)
class Run:
    """One stack lifetime inside a scenario."""

    label: str
    calls: CallPlan
    steps: tuple[Step, ...] = ()
    stack: Mapping[str, Any] = field(default_factory=dict)  # lab.stack.StackConfig fields
    netem: bool = True  # put the path emulator between callers and the stack
    impair: Mapping[str, Any] = field(default_factory=dict)  # initial impairment, netem body
    tags: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"rebind": "off", "loss": 0.05}
    caller: Mapping[str, Any] = field(default_factory=dict)  # lab.callers SpeakingPlan fields
    client: str = "aiortc"  # a name from lab.callers.drivers.DRIVERS
    poll_interval_s: float = 0.5


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"  # observed what the claim predicts
    REFUTED = "refuted"  # observed the opposite
    INCONCLUSIVE = "inconclusive"  # the run could not tell (e.g. too few samples)


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the verdict table: claim | expected | observed | verdict."""

    claim: str
    expected: str
    observed: str
    verdict: Verdict
    # Where in results.json the observed numbers live, so every number is traceable.
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Analysis:
    metrics: Mapping[str, Any]
    findings: tuple[Finding, ...]
    tables: tuple[tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]], ...] = ()
    # (title, header, rows): extra tables for the report, built from metrics only


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    purpose: str  # one line, shown by `rtclab scenario list`
    runs: Callable[[bool], tuple[Run, ...]]  # quick -> runs
    analyse: Callable[[list[dict[str, Any]]], Analysis]  # run data (as in results.json) -> analysis
    plots: tuple[str, ...] = ("arrival", "gaps", "setup")
    description: str = ""  # a paragraph for the report: what is done and why
    # Runs that measure independent things (one per policy, say) may share the
    # machine: they halve the wall time, and 1-2 calls each cost little CPU.
    parallel: bool = False
    max_parallel: int | None = None  # runs at once when parallel (None: all of them)
    # Print each call's result as it is summarised (the reference scenario does,
    # so a first run shows what one call through the relay looks like).
    show_calls: bool = False
    # The seed of the scenario's random draws (the phases of its moves), written into
    # results.json: the same seed plans the same runs.  None: it draws nothing.
    seed: int | None = None
