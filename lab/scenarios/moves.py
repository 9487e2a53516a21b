"""Many moves at random phases: what a recovery figure after an address change rests on.

After a caller's address changes, recovery waits for its next STUN check, so
the figure depends on where the move falls in the caller's consent schedule
(aioice checks every 5 s x U(0.8, 1.2)).  One move is an anecdote: a move just
before a check looks instant, one just after looks slow.  A scenario that
moves callers therefore moves many calls at phases spread over one consent
interval, and reports the distribution.

What one move is:

* **one call, moved once.**  A call is never moved twice: under ``--rebind
  off`` its downlink never returns and the server drops the session ~30 s
  later, so a second move would measure nothing; and a fresh call makes every
  move start from the same state (the pair ICE nominated at setup) under
  every policy, so the policies are compared on the same thing.
* **calls of one run share a stack and move together**, as one NAT rebinding
  moves all of its mappings (the namespace lab's NAT cannot move one alone).
  Each call starts at its own offset, so the common move falls at a
  different phase of each call: the offsets are stratified over one consent
  interval (move k of n falls in the k-th n-th of it) and jittered by a
  seeded draw, so a few moves already cover the interval evenly and the same
  seed gives the same phases.
* **runs of one policy interleave their strata**: eight moves in two runs of
  four still cover the interval in eighths.

Everything here is pure: a seed and a key in, offsets and steps out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.scenarios.evidence import CONSENT_INTERVAL_MAX_S
from lab.scenarios.model import Action, CallPlan, Run, Step

# The default seed of every scenario that moves callers; `scenario run --seed` draws others.
DEFAULT_SEED = 1
# How many moves a figure rests on outside --quick.
FULL_MOVES = 8
# The earliest phase: the call has connected and its first audio has settled.
SETTLE_S = 2.0
# A client in a process of its own (a browser, Node, GStreamer) starts before it
# offers: up to ~4.5 s with three browsers and three stacks on 2 cores.  The move
# waits that long too, so it lands in the same settled phase of the call.
CLIENT_START_S = 5.0
# How long a move waits for the last call of its stack to connect before it goes ahead
# (browsers took up to ~20 s to start on this 2-core machine under load).
MOVE_WAIT_MAX_S = 30.0
# Calls moved together in one stack.  The lab's caller costs ~9 % of a core per call
# (both ends): four per stack, three stacks at once, stay well below the ~14 calls at
# which this 2-core machine starts to stall audio.  A client in its own process (a
# browser, Node, GStreamer) costs more.
LAB_CALLS_PER_RUN = 4
OTHER_CALLS_PER_RUN = 2
# The phases drawn cover one whole consent interval: every position of the move
# relative to the caller's next check is equally likely.
PHASE_WINDOW_S = CONSENT_INTERVAL_MAX_S


@dataclass(frozen=True, slots=True)
class MovePlan:
    """How many moves one figure rests on, and how they are spread over stacks."""

    moves: int  # per policy (and client): calls moved once each
    per_run: int  # calls moved together in one stack
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.moves < 1 or self.per_run < 1:
            raise ValueError("a move plan needs at least one move and one call per run")

    @property
    def runs(self) -> int:
        return math.ceil(self.moves / self.per_run)

    def offsets(self, key: str) -> list[list[float]]:
        """When each run's calls start (s after the run's start), one list per run.

        ``key`` names the figure (``"ip-change/off"``, say): each figure draws its
        own phases from the seed, and the same seed and key draw the same ones.
        """
        rng = random.Random(f"{self.seed}:{key}")
        width = PHASE_WINDOW_S / self.moves
        draws = [round((k + rng.random()) * width, 3) for k in range(self.moves)]
        return [sorted(draws[run :: self.runs]) for run in range(self.runs)]


def move_time(client: str) -> float:
    """When a run of ``client`` calls is moved: after the last offset has connected and settled."""
    return PHASE_WINDOW_S + SETTLE_S + (0.0 if client == "aiortc" else CLIENT_START_S)


def calls_per_run(client: str) -> int:
    """How many calls of ``client`` one stack moves together."""
    return LAB_CALLS_PER_RUN if client == "aiortc" else OTHER_CALLS_PER_RUN


def moving_steps(
    offsets: list[float], *, move_at_s: float, watch_s: float, mode: str
) -> tuple[Step, ...]:
    """One call started at each offset, all moved at ``move_at_s``, watched ``watch_s`` after.

    A call talks from when it connects until ``watch_s`` after the move (its
    ``seconds`` count from the start, as a client's talk time does; setup time
    comes on top and only lengthens the watch a little).  The move also waits
    until every call has connected and settled (a client slow to start on a
    loaded machine), at most :data:`MOVE_WAIT_MAX_S`: a call that started late
    also talks until later, so the watch after the move keeps its length.
    """
    if any(offset >= move_at_s for offset in offsets):
        raise ValueError("every call must start before the move")
    starts = tuple(
        Step(
            offset,
            Action.START_CALLS,
            {
                "count": 1,
                "seconds": round(move_at_s + watch_s - offset, 3),
                "label": f"move {index + 1}",
            },
        )
        for index, offset in enumerate(offsets)
    )
    move = Step(
        move_at_s,
        Action.REBIND,
        {
            "mode": mode,
            "after_connected": len(offsets),
            "settle_s": SETTLE_S,
            "wait_max_s": MOVE_WAIT_MAX_S,
        },
    )
    return (*starts, move)


def moving_runs(
    plan: MovePlan,
    *,
    label: str,
    client: str,
    mode: str,
    watch_s: float,
    stack: Mapping[str, Any],
    tags: Mapping[str, Any],
) -> list[Run]:
    """The runs that make ``plan``'s moves for one figure (one policy, one client).

    Every figure draws the same phases from the seed: the policies and clients
    are what differs between figures, not where their moves fell.
    """
    runs = []
    for index, offsets in enumerate(plan.offsets("mobility")):
        part = f" #{index + 1}" if plan.runs > 1 else ""
        runs.append(
            Run(
                label=f"{label}{part}",
                calls=CallPlan(count=0, seconds=0.0),
                steps=moving_steps(
                    offsets, move_at_s=move_time(client), watch_s=watch_s, mode=mode
                ),
                stack=stack,
                tags=tags,
                client=client,
            )
        )
    return runs


def quick_note(moves: int, quick: bool) -> str:
    """How many moves a figure rests on, said where the figure is."""
    each = f"{moves} move{'s' if moves != 1 else ''} each"
    return f"{each} (quick set; a full run makes {FULL_MOVES})" if quick else each
