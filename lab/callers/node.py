"""Node WebRTC stacks as lab callers: libwebrtc, werift and libdatachannel.

Each call runs ``node lab/callers/node/call.js --stack NAME`` (one script, one
small adapter per stack under ``node/stacks/``), which prints one JSON line of
what the client measured; :func:`lab.callers.external.call_result` merges in
the media server's view (the script reads ``GET <Location>`` before it hangs
up) to give the call result of DESIGN.md.

The npm packages (exact versions in ``node/package.json``, the whole tree in
``node/package-lock.json``) are installed by :func:`ensure_installed`, once per
lock-file hash, into ``$RTCLAB_NODE_PREFIX`` (default: ``lab/callers/node``
itself, whose ``node_modules`` git ignores).  Installing needs the npm registry;
calls do not, so install before entering an offline network namespace::

    python -m lab.callers.node install

The caller's voice is the aiortc caller's (:class:`SpeakingPlan`), rendered
once to files the scripts loop: raw PCM for libwebrtc, which encodes itself,
and Ogg Opus for werift and libdatachannel, which send RTP as given.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.callers.conversation import SpeakingPlan
from lab.callers.external import failed_result, run_client
from lab.callers.voicefiles import voice_cache_dir, voice_file

log = logging.getLogger("rtclab.caller.node")

PACKAGE_DIR = Path(__file__).with_name("node")
SCRIPT = PACKAGE_DIR / "call.js"
MANIFESTS = ("package.json", "package-lock.json")
PREFIX_ENV = "RTCLAB_NODE_PREFIX"
INSTALL_COMMAND = "python -m lab.callers.node install"
# The stacks' native parts and werift 0.24 need Node 20 or newer.
MIN_NODE_MAJOR = 20


class NodeSetupError(RuntimeError):
    pass


# --- installing the npm packages ------------------------------------------------------


def install_prefix() -> Path:
    """Where ``node_modules`` lives: ``$RTCLAB_NODE_PREFIX``, else next to the scripts."""
    configured = os.environ.get(PREFIX_ENV)
    return Path(configured).resolve() if configured else PACKAGE_DIR


def manifest_hash() -> str:
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def _stamp(prefix: Path) -> Path:
    return prefix / "node_modules" / f".rtclab-installed-{manifest_hash()}"


def not_installed(prefix: Path | None = None) -> str | None:
    """None if the pinned packages are installed under ``prefix``, else why not."""
    prefix = prefix or install_prefix()
    if _stamp(prefix).exists():
        return None
    return (
        f"the Node packages are not installed in {prefix} (or package-lock.json changed): "
        f"run `{INSTALL_COMMAND}` while the npm registry is reachable"
    )


def ensure_installed(prefix: Path | None = None, *, timeout_s: float = 600.0) -> Path:
    """Install the pinned packages (``npm ci``) unless this lock file's are there.

    Returns the ``node_modules`` directory; raises :class:`NodeSetupError` with
    npm's last words when npm is missing or the registry cannot be reached.
    """
    prefix = prefix or install_prefix()
    modules = prefix / "node_modules"
    if not_installed(prefix) is None:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise NodeSetupError(f"npm not found on PATH (it comes with Node {MIN_NODE_MAJOR}+)")
    prefix.mkdir(parents=True, exist_ok=True)
    # The lock lives outside the tree: npm ci replaces node_modules wholesale.
    lock = (
        Path(tempfile.gettempdir()) / f"rtclab-npm-{hashlib.sha256(bytes(prefix)).hexdigest()[:12]}"
    )
    with _locked(lock):
        if not_installed(prefix) is None:  # another process finished it meanwhile
            return modules
        if prefix != PACKAGE_DIR:
            for name in MANIFESTS:
                shutil.copyfile(PACKAGE_DIR / name, prefix / name)
        command = [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"]
        log.info("installing node packages", extra={"prefix": str(prefix)})
        try:
            done = subprocess.run(
                command, cwd=prefix, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise NodeSetupError(
                f"`npm ci` in {prefix} took over {timeout_s:g} s: is the npm registry reachable?"
            ) from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise NodeSetupError(
                f"`npm ci` in {prefix} failed with exit {done.returncode} "
                f"(is the npm registry reachable?):\n{tail}"
            )
        for old in modules.glob(".rtclab-installed-*"):
            old.unlink()
        _stamp(prefix).touch()
    return modules


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_problem() -> str | None:
    """None if a recent enough ``node`` is on PATH, else why not."""
    node = shutil.which("node")
    if node is None:
        return f"node not found on PATH (the stacks need Node {MIN_NODE_MAJOR}+ and npm)"
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return f"{node} --version did not answer"
    if major < MIN_NODE_MAJOR:
        return f"node {version} is too old: the stacks need Node {MIN_NODE_MAJOR}+"
    return None


# --- the drivers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCallOptions:
    speaking: SpeakingPlan = field(default_factory=SpeakingPlan)
    # werift and libdatachannel bind their ICE sockets here (libwebrtc cannot be told).
    bind_host: str = "127.0.0.1"
    # Loopback connects in well under a second; a loaded 2-core CI machine still fits.
    setup_timeout_s: float = 10.0
    # Signaling answers in milliseconds; a stuck server must not hang the caller.
    http_timeout_s: float = 10.0
    # Hang guard on top of the script's own timeouts: node start-up, gathering,
    # three HTTP requests and closing native stacks.
    exit_grace_s: float = 45.0


class NodeDriver:
    """One Node stack as a :class:`lab.callers.drivers.ClientDriver`."""

    direction = "sendrecv"

    def __init__(
        self, name: str, stack: str, voice: str, options: NodeCallOptions | None = None
    ) -> None:
        self.name = name
        self.stack = stack  # call.js --stack
        self.voice = voice  # "pcm" (the stack encodes) or "opus" (it sends RTP as given)
        self.options = options or NodeCallOptions()

    def unavailable(self) -> str | None:
        return node_problem() or not_installed()

    async def call(self, offer_url: str, *, seconds: float) -> dict[str, Any]:
        problem = self.unavailable()
        if problem is not None:
            return failed_result(f"unavailable: {problem}")
        options = self.options
        prefix = install_prefix()
        audio = voice_file(self.voice, options.speaking, voice_cache_dir())
        node = shutil.which("node")
        assert node is not None  # unavailable() said so
        argv = [
            node,
            str(SCRIPT),
            "--stack",
            self.stack,
            "--offer-url",
            offer_url,
            "--audio",
            str(audio),
            "--seconds",
            f"{seconds:g}",
            "--setup-timeout",
            f"{options.setup_timeout_s:g}",
            "--http-timeout",
            f"{options.http_timeout_s:g}",
            "--bind",
            options.bind_host,
        ]
        env = dict(os.environ)
        if prefix != PACKAGE_DIR:
            env["NODE_PATH"] = str(prefix / "node_modules")
        budget_s = seconds + 2 * options.setup_timeout_s + options.exit_grace_s
        return await run_client(argv, budget_s, self.stack, env=env)


WRTC = NodeDriver("node-wrtc", "wrtc", "pcm")
WERIFT = NodeDriver("node-werift", "werift", "opus")
NODE_DATACHANNEL = NodeDriver("node-datachannel", "node-datachannel", "opus")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.callers.node",
        description="Manage the Node WebRTC stacks the lab calls with.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser(
        "install",
        help=f"npm ci the pinned packages (needs the npm registry) into ${PREFIX_ENV} "
        "or lab/callers/node; a no-op when this lock file's packages are there",
    )
    install.add_argument(
        "--prefix", type=Path, help=f"install here instead (default ${PREFIX_ENV})"
    )
    commands.add_parser("check", help="say whether node and the packages are ready; exit 1 if not")
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            modules = ensure_installed(args.prefix)
        except NodeSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(modules)
        return 0
    problem = node_problem() or not_installed()
    print(problem or "ready")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
