"""Build and tear down the namespace lab on this machine (root only).

The one rule: whatever :class:`Topology` creates is gone when it exits, also
when the run inside failed or was interrupted.  Every interface, address,
route, rule and qdisc lives inside the lab's own namespaces, so deleting the
namespaces (after ending the processes still inside them) removes everything;
nothing is ever created in the namespace the lab was started from.  A run
killed too hard to clean up (SIGKILL) leaves namespaces whose name carries a
pid that no longer exists: the next run, or ``rtclab lab --netns cleanup``,
removes them.

Named namespaces live in ``/run/netns`` of the mount namespace: under
``unshare --net`` (as the tests run) that is the host's, so names must be
unique machine-wide -- they carry the creating pid and random bits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from lab.netns.plan import (
    LAN_DEVICE,
    PREFIX,
    WAN_DEVICE,
    Impairment,
    Plan,
    in_namespace,
    nat_ruleset,
    owner_pid,
    setup_commands,
)
from lab.netns.shaping import root_commands

log = logging.getLogger("rtclab.netns")

NETNS_DIR = Path("/run/netns")
TOOLS = ("ip", "nft", "conntrack", "tc")
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL: the stack's parts exit in well under a second


class CommandError(RuntimeError):
    pass


def die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """PR_SET_PDEATHSIG: the child gets SIGTERM when its parent dies, however it died."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    """Run a command; its stdout, or CommandError with its stderr."""
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.strip()[:500]}"
        )
    return done.stdout


# --- what this machine allows -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    root: bool
    missing_tools: tuple[str, ...]
    netns_error: str | None  # why `ip netns add` failed, None if it works
    netem: bool  # the kernel has sch_netem
    netem_error: str | None = None

    def unusable(self) -> str | None:
        """Why the namespace lab cannot run here (None: it can)."""
        if not self.root:
            return "the namespace lab needs root (ip netns, nftables, conntrack)"
        if self.missing_tools:
            return (
                f"missing {', '.join(self.missing_tools)} "
                "(Debian: apt-get install iproute2 nftables conntrack)"
            )
        if self.netns_error:
            return f"cannot create a network namespace: {self.netns_error}"
        return None

    def describe(self) -> dict[str, object]:
        return {
            "root": self.root,
            "missing_tools": list(self.missing_tools),
            "netns": self.netns_error or "ok",
            "netem": "available" if self.netem else f"absent ({self.netem_error})",
        }


def probe() -> Capabilities:
    """Try, in a scratch namespace, what the lab needs: netns, veth, nftables, netem."""
    root = os.geteuid() == 0
    missing = tuple(tool for tool in TOOLS if shutil.which(tool) is None)
    if not root or missing:
        return Capabilities(root, missing, "not tried", netem=False, netem_error="not tried")
    scratch = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        run(["ip", "netns", "add", scratch])
    except CommandError as exc:
        return Capabilities(root, missing, str(exc), netem=False, netem_error="not tried")
    try:
        run(["ip", "-n", scratch, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        run(in_namespace(scratch, ["nft", "-f", "-"]), stdin="table ip probe { }\n")
        try:
            run(["tc", "-n", scratch, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"])
            netem, netem_error = True, None
        except CommandError as exc:
            netem, netem_error = False, str(exc).rsplit(": ", 1)[-1]
        return Capabilities(root, missing, None, netem=netem, netem_error=netem_error)
    except CommandError as exc:
        return Capabilities(root, missing, str(exc), netem=False, netem_error="not tried")
    finally:
        remove_namespace(scratch)


def choose_impairment(requested: str, capabilities: Capabilities) -> Impairment:
    """``auto``: netem when the kernel has it, else the user-space emulator."""
    if requested == "auto":
        return Impairment.NETEM if capabilities.netem else Impairment.EMULATOR
    chosen = Impairment(requested)
    if chosen is Impairment.NETEM and not capabilities.netem:
        raise CommandError(f"this kernel has no netem ({capabilities.netem_error})")
    return chosen


# --- namespaces ---------------------------------------------------------------------------


def lab_namespaces() -> list[str]:
    try:
        return sorted(name for name in os.listdir(NETNS_DIR) if name.startswith(PREFIX))
    except FileNotFoundError:
        return []


def namespace_pids(namespace: str) -> list[int]:
    out = run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_processes(namespace: str, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process inside ``namespace`` (all of them ours), SIGKILL stragglers."""
    pids = namespace_pids(namespace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def remove_namespace(namespace: str) -> None:
    """End what runs inside, then delete it: its links, addresses, rules and qdiscs go too."""
    end_processes(namespace)
    run(["ip", "netns", "del", namespace], check=False)


def cleanup_stale() -> list[str]:
    """Remove lab namespaces whose creating process is gone (a run that was SIGKILLed)."""
    removed = []
    for name in lab_namespaces():
        pid = owner_pid(name)
        if pid is None or _alive(pid):
            continue
        log.warning("removing a namespace left by an earlier run", extra={"namespace": name})
        remove_namespace(name)
        removed.append(name)
    return removed


@dataclass
class Topology:
    """The lab's namespaces, links and rules, from ``create()`` until ``destroy()``.

    ``with Topology(plan):`` builds it and always takes it down again.
    """

    plan: Plan
    created: list[str] = field(default_factory=list)

    def __enter__(self) -> Topology:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def create(self) -> None:
        plan = self.plan
        for argv in setup_commands(plan):
            if argv[:3] == ["ip", "netns", "add"]:
                self.created.append(argv[3])
            run(argv)
        nat = plan.namespace("nat")
        ruleset = nat_ruleset(plan.server_address, WAN_DEVICE, LAN_DEVICE)
        run(in_namespace(nat, ["nft", "-f", "-"]), stdin=ruleset)
        if plan.impairment is Impairment.NETEM:
            for device in (WAN_DEVICE, LAN_DEVICE):
                for argv in root_commands(nat, device):
                    run(argv)
        log.info(
            "namespace lab up",
            extra={"namespaces": list(plan.namespaces), "impairment": plan.impairment.value},
        )

    def destroy(self) -> list[str]:
        """Remove every namespace this topology created; returns any that would not go."""
        for name in reversed(self.created):
            remove_namespace(name)
        left = [name for name in self.created if (NETNS_DIR / name).exists()]
        if left:
            log.error("namespaces left behind", extra={"namespaces": left})
        else:
            log.info("namespace lab removed", extra={"namespaces": self.created})
        self.created = left
        return left

    def exec_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        return in_namespace(self.plan.namespace(role), argv)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C does, so what a lab built is removed on the way out."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
