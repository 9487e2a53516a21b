"""Which stacks a set of scenarios asks of the compose lab: one pass for each.

The compose stack is fixed while it runs: one relay with one ``--rebind``
policy, one ``--forward`` mode and one kind of flow state.  A scenario whose runs compare policies
(ip-change: off, verified, ssrc) is therefore run once per policy, each pass
against the relay restarted with that policy; the caller skips the runs a pass
cannot serve, and the passes' results are merged into one report
(lab.scenarios.report.merge_passes).  Pure: which passes, and which scenarios
in each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from lab.compose.caller import ComposeLab, ComposeServices
from lab.netns.plan import Impairment
from lab.scenarios.model import Run, Scenario

REDIS_STATE = "redis://redis:6379/0"  # the compose file's Redis service


@dataclass(frozen=True, slots=True, order=True)
class Pass:
    """The stack settings one pass runs with (what docker-compose.yml reads)."""

    rebind: str = "off"
    state: str = "memory"  # memory | redis
    forward: str = "nat"  # nat | encap
    media_socket: str = "shared"  # shared | per-session

    @classmethod
    def of(cls, run: Run) -> Pass:
        stack = run.stack
        return cls(
            str(stack.get("rebind", "off")),
            str(stack.get("state", "memory")),
            str(stack.get("forward", "nat")),
            str(stack.get("media_socket", "shared")),
        )

    @property
    def label(self) -> str:
        """``rebind=off``, with the other settings where they are not the default."""
        extra = [
            f"{name}={value}"
            for name, value, default in (
                ("state", self.state, "memory"),
                ("forward", self.forward, "nat"),
                ("media-socket", self.media_socket, "shared"),
            )
            if value != default
        ]
        return ", ".join([f"rebind={self.rebind}", *extra])

    @property
    def slug(self) -> str:
        """A directory name for the pass's reports."""
        return self.label.replace("=", "-").replace(", ", "-")

    @property
    def relay_state(self) -> str:
        """The relay's ``--state``."""
        return REDIS_STATE if self.state == "redis" else "memory"

    def environment(self) -> dict[str, str]:
        """docker-compose.yml's settings for this pass."""
        return {
            "RTCLAB_REBIND": self.rebind,
            "RTCLAB_STATE": self.relay_state,
            "RTCLAB_FORWARD": self.forward,
            "RTCLAB_MEDIA_SOCKET": self.media_socket,
        }

    def services(self, base: ComposeServices) -> ComposeServices:
        return dataclasses.replace(
            base,
            rebind=self.rebind,
            state=self.relay_state,
            forward=self.forward,
            media_socket=self.media_socket,
        )


def plan_passes(
    scenarios: Sequence[Scenario], quick: bool, base: ComposeServices
) -> list[tuple[Pass, list[Scenario]]]:
    """The passes the scenarios need, each with the scenarios that have runs in it.

    The default stack's pass comes first.  A scenario no pass can serve at all
    (several relay instances, the direct topology) still runs in the first one,
    so its report says why each of its runs was skipped.
    """
    needed: dict[Pass, list[Scenario]] = {}
    for scenario in scenarios:
        served = False
        for run in scenario.runs(quick):
            wanted = Pass.of(run)
            lab = ComposeLab(wanted.services(base), caller_host="-", impairment=_ANY)
            if lab.skip_reason(run) is None:
                served = True
                in_pass = needed.setdefault(wanted, [])
                if scenario not in in_pass:
                    in_pass.append(scenario)
        if not served:
            needed.setdefault(Pass(), []).append(scenario)
    default = Pass()
    return sorted(needed.items(), key=lambda item: (item[0] != default, item[0]))


# Which path a pass's caller impairs with does not decide whether it can serve a run.
_ANY = (Impairment.NONE, "not chosen yet")
