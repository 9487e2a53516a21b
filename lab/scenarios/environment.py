"""Where a scenario's stack runs and how its path is controlled.

The timelines are the same everywhere; what differs is where the processes
live and what "impair" and "rebind" do.  On loopback (the default) the stack's
parts are plain subprocesses and the path is the user-space emulator.  Another
lab (network namespaces with a real NAT, say) provides its own
:class:`LabEnvironment`: how to start the stack there and a :class:`PathControl`
whose rebind is a real NAT rebinding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from lab.netem.client import NetemControl
from lab.scenarios.model import Run
from lab.stack import Stack, StackConfig


class PathControl(Protocol):
    """What a timeline may do to the path between callers and the stack.

    ``impair(direction, **fields)`` takes the emulator's impairment fields
    (delay_ms, loss, burst, blackhole, ...); ``rebind(mode, caller)`` moves the
    caller to a new source port (``port``) or address (``address``).
    """

    @property
    def impair(self) -> Callable[..., Awaitable[dict[str, Any]]]: ...

    @property
    def rebind(self) -> Callable[..., Awaitable[list[dict[str, str]]]]: ...

    async def state(self) -> dict[str, Any]: ...

    async def stun(self) -> dict[str, Any] | None:
        """Every caller's STUN as the path saw it (lab/netem/stunwatch.py); None: not seen."""
        ...

    async def close(self) -> None: ...


class LabEnvironment(Protocol):
    name: str
    # Whether a scenario's runs may share the machine at once (Scenario.parallel): not
    # where every run goes through one path, as in the compose caller's namespace.
    parallel_runs: bool
    # The address callers gather on (and so send from): loopback here, the caller
    # namespace's address in the namespace lab.
    caller_host: str

    def skip_reason(self, run: Run) -> str | None:
        """Why this lab cannot do ``run`` (None: it can); skipped runs are reported."""
        ...

    def make_stack(self, config: StackConfig) -> Stack:
        """The stack object for a run (a lab whose services already run starts nothing)."""
        ...

    def stack_config(self, netem: bool, overrides: Mapping[str, Any], **extra: Any) -> StackConfig:
        """The stack for a run; ``netem`` says whether the run wants a controllable path."""
        ...

    def path(self, stack: Stack) -> PathControl | None:
        """The control of the path in front of ``stack`` (None: no path in between)."""
        ...

    def describe(self) -> str:
        """One line for reports: where the run happened."""
        ...

    def close(self) -> None:
        """Release what the lab holds (emulators, rules) once all scenarios ran."""
        ...


class Loopback:
    """Everything on 127.0.0.0/8; the path is the user-space emulator (lab/netem)."""

    name = "loopback"
    caller_host = "127.0.0.1"
    parallel_runs = True

    def skip_reason(self, run: Run) -> str | None:
        return None

    def make_stack(self, config: StackConfig) -> Stack:
        return Stack(config)

    def stack_config(self, netem: bool, overrides: Mapping[str, Any], **extra: Any) -> StackConfig:
        return StackConfig(netem=netem, **dict(overrides), **extra)

    def path(self, stack: Stack) -> PathControl | None:
        url = stack.netem_control_url
        return NetemControl(url) if url else None

    def describe(self) -> str:
        return "loopback with the user-space path emulator"

    def close(self) -> None:
        pass


LOOPBACK = Loopback()
