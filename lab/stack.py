"""Start, watch and stop the whole rtclab stack as subprocesses on loopback.

One code path for ``rtclab up``, the scenario runner and the end-to-end tests,
so what a scenario measures is exactly what a user starts.  Each part runs as
its own process (``python -m stun_lb`` and so on), as in production: the lab
drives them over HTTP and UDP and never reaches into their memory.

Children get ``PR_SET_PDEATHSIG`` so that even a SIGKILLed ``rtclab up``
leaves no orphans; a normal stop sends SIGTERM to each and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

log = logging.getLogger("rtclab.lab")

LOOPBACK = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """A port the kernel just handed out (racy by nature; fine on loopback)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def source_address_towards(host: str, port: int) -> str:
    """The address this machine sends from to ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((socket.gethostbyname(host), port))
        return str(sock.getsockname()[0])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux only: the child gets SIGTERM when the process that started it dies.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


DEFAULT_MEDIA_SERVERS = 2


@dataclass(frozen=True, slots=True)
class StackConfig:
    media_servers: int = DEFAULT_MEDIA_SERVERS
    rebind: str = "off"  # relay policy: off | verified | ssrc
    topology: str = "relay"  # relay | direct
    # How the relay passes datagrams to media servers: nat (a socket per flow) or
    # encap (one internal socket, a PROXY v2 header naming the client).
    forward: str = "nat"
    # One UDP socket per media server (published) or one per session.
    media_socket: str = "shared"
    host: str = LOOPBACK
    # None picks a free port, so scenarios and tests can run side by side.
    signaling_port: int | None = None
    relay_port: int | None = None
    relay_admin_port: int | None = None
    # encap: the relay's internal socket, fixed so a restarted relay is where the
    # media servers already send (None picks a free one).
    relay_internal_port: int | None = None
    media_ports: tuple[int, ...] = ()
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    relay_args: tuple[str, ...] = ()
    media_args: tuple[str, ...] = ()
    signaling_args: tuple[str, ...] = ()
    # Relay instances sharing the public port (SO_REUSEPORT), and where they keep
    # flow state: "memory" (each its own) or "redis" (a redis-server the stack starts).
    relays: int = 1
    state: str = "memory"
    netem: bool = False  # put the path emulator between callers and the stack
    netem_args: tuple[str, ...] = ()
    log_dir: Path | None = None
    log_level: str = "INFO"
    # Prefix for every child's command line (e.g. ``ip netns exec NAME``), so another
    # lab can run the same parts somewhere else.
    launcher: tuple[str, ...] = ()
    ready_timeout_s: float = 30.0  # cold imports of aiortc take a few seconds on 2 cores

    @classmethod
    def fixed_ports(cls, **overrides: Any) -> StackConfig:
        """The well-known ports of DESIGN.md, as ``rtclab up`` uses by default."""
        count = int(overrides.get("media_servers", DEFAULT_MEDIA_SERVERS))
        defaults: dict[str, Any] = {
            "signaling_port": 8080,
            "relay_port": 3478,
            "relay_admin_port": 9478,
            "relay_internal_port": 3479,  # under forward=encap only
            "media_ports": tuple(8101 + i for i in range(count)),
        }
        defaults.update(overrides)
        return cls(**defaults)


@dataclass
class Child:
    """One running part of the stack."""

    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, env: dict[str, str]) -> None:
        self._log_file = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=env,
            preexec_fn=_die_with_parent,
        )
        log.info("started", extra={"part": self.name, "pid": self.process.pid})

    def cpu_seconds(self) -> float | None:
        """User + system CPU this part has used so far (Linux /proc), or None."""
        if not self.running:
            return None
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    async def wait(self, timeout_s: float) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            return None

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout_s``."""
        if self.process is None:
            return None
        self.send_signal(signal.SIGTERM)
        code = await self.wait(timeout_s)
        if code is None:
            log.warning("did not stop on SIGTERM; killing", extra={"part": self.name})
            self.send_signal(signal.SIGKILL)
            code = await self.wait(timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code


class StackError(RuntimeError):
    pass


class Stack:
    """The running stack: relay, media servers and signaling.

    Use as ``async with Stack(config) as stack:``; :meth:`endpoints` is what
    ``rtclab up`` prints.  Scenario actions (kill, restart, drain) live here
    too, because they are things done to the processes.
    """

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        host = config.host
        self._own_log_dir = config.log_dir is None
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="rtclab-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.signaling_port = config.signaling_port or free_port()
        self.relay_port = config.relay_port or free_port(socket.SOCK_DGRAM, host)
        self.relay_admin_port = config.relay_admin_port or free_port()
        # Further instances get their own admin ports; they share the public one.
        self.relay_admin_ports = [self.relay_admin_port] + [
            free_port() for _ in range(config.relays - 1)
        ]
        if config.state not in ("memory", "redis"):
            raise StackError(f"state must be memory or redis, not {config.state!r}")
        if config.forward not in ("nat", "encap"):
            raise StackError(f"forward must be nat or encap, not {config.forward!r}")
        if config.media_socket not in ("shared", "per-session"):
            raise StackError(
                f"media_socket must be shared or per-session, not {config.media_socket!r}"
            )
        if config.forward == "encap" and config.topology != "relay":
            raise StackError("forward=encap is how the relay forwards: topology must be relay")
        self.relay_internal_port = (
            config.relay_internal_port or free_port(socket.SOCK_DGRAM, host)
            if config.forward == "encap"
            else None
        )
        self.redis_port = free_port() if config.state == "redis" else None
        media_ports = list(config.media_ports)
        while len(media_ports) < config.media_servers:
            media_ports.append(free_port())
        self.media_ports = media_ports[: config.media_servers]
        if config.netem:
            self.netem_udp_port = free_port(socket.SOCK_DGRAM, host)
            self.netem_tcp_port = free_port()
            self.netem_control_port = free_port()
        self.children: dict[str, Child] = {}
        self._build_children()

    # --- endpoints ----------------------------------------------------------

    @property
    def signaling_url(self) -> str:
        return f"http://{self.config.host}:{self.signaling_port}"

    @property
    def relay_address(self) -> tuple[str, int]:
        return self.config.host, self.relay_port

    @property
    def relay_internal_address(self) -> tuple[str, int] | None:
        """encap: where the relay's internal socket is (what media servers trust)."""
        if self.relay_internal_port is None:
            return None
        return self.config.host, self.relay_internal_port

    @property
    def relay_admin_url(self) -> str:
        return f"http://{self.config.host}:{self.relay_admin_port}"

    @property
    def relay_names(self) -> list[str]:
        """``relay`` for one instance, ``relay-1``, ``relay-2``... for several."""
        if not self.has_relay:
            return []
        if self.config.relays == 1:
            return ["relay"]
        return [f"relay-{i + 1}" for i in range(self.config.relays)]

    def relay_admin_urls(self) -> dict[str, str]:
        """Admin URL of each relay instance by name (none in direct topology)."""
        if not self.has_relay:
            return {}
        return {
            name: f"http://{self.config.host}:{port}"
            for name, port in zip(self.relay_names, self.relay_admin_ports, strict=True)
        }

    @property
    def redis_url(self) -> str | None:
        return (
            None if self.redis_port is None else f"redis://{self.config.host}:{self.redis_port}/0"
        )

    def media_url(self, index: int) -> str:
        return f"http://{self.config.host}:{self.media_ports[index]}"

    @property
    def has_relay(self) -> bool:
        return self.config.topology == "relay"

    @property
    def netem_control_url(self) -> str | None:
        if not self.config.netem:
            return None
        return f"http://{self.config.host}:{self.netem_control_port}"

    @property
    def public_address(self) -> tuple[str, int]:
        """Where callers send media: the emulator when it is in the path, else the relay."""
        if self.config.netem:
            return self.config.host, self.netem_udp_port
        return self.relay_address

    @property
    def caller_signaling_url(self) -> str:
        """The signaling URL callers use: through the emulator's TCP hop when present."""
        if self.config.netem:
            return f"http://{self.config.host}:{self.netem_tcp_port}"
        return self.signaling_url

    def endpoints(self) -> dict[str, Any]:
        return {
            "signaling": self.signaling_url,
            "offer_url": f"{self.caller_signaling_url}/v1/calls",
            "relay": f"{self.config.host}:{self.relay_port}" if self.has_relay else None,
            "relay_admin": self.relay_admin_url if self.has_relay else None,
            "relay_instances": self.relay_admin_urls(),
            "state": self.redis_url or "memory",
            "media": [
                {"backend_id": index + 1, "url": self.media_url(index)}
                for index in range(len(self.media_ports))
            ],
            "netem_control": self.netem_control_url,
            "topology": self.config.topology,
            "rebind": self.config.rebind if self.has_relay else None,
            "forward": self.config.forward if self.has_relay else None,
            "relay_internal": (
                f"{self.config.host}:{self.relay_internal_port}"
                if self.relay_internal_port
                else None
            ),
            "media_socket": self.config.media_socket,
            "logs": str(self.log_dir),
        }

    # --- process set-up -----------------------------------------------------

    def _python(self, module: str, *args: str) -> list[str]:
        return [
            *self.config.launcher,
            sys.executable,
            "-m",
            module,
            *args,
            "--log-level",
            self.config.log_level,
        ]

    def _build_children(self) -> None:
        cfg = self.config
        host = cfg.host
        if self.redis_port is not None:
            self._add(
                "redis",
                [
                    *cfg.launcher,
                    redis_server_binary(),
                    "--bind",
                    host,
                    "--port",
                    str(self.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.log_dir),
                ],
                f"redis://{host}:{self.redis_port}",
            )
        if self.has_relay:
            backends = [
                arg
                for index in range(len(self.media_ports))
                for arg in ("--backend", f"{index + 1}={host}")
            ]
            shared = ["--reuse-port"] if cfg.relays > 1 else []
            if self.redis_url:
                shared += ["--state", self.redis_url]
            shared += ["--forward", cfg.forward]
            if self.relay_internal_port is not None:
                # Every instance binds it (--reuse-port with several): replies need no state.
                shared += ["--internal", f"{host}:{self.relay_internal_port}"]
            for name, admin_url in self.relay_admin_urls().items():
                admin = admin_url.removeprefix("http://")
                self._add(
                    name,
                    self._python(
                        "stun_lb",
                        "--listen",
                        f"{host}:{self.relay_port}",
                        "--admin",
                        admin,
                        "--rebind",
                        cfg.rebind,
                        *backends,
                        *shared,
                        *cfg.relay_args,
                    ),
                    f"{admin_url}/healthz",
                )
        if cfg.netem:
            if not self.has_relay:
                raise StackError(
                    "the path emulator sits in front of the relay: topology must be relay"
                )
            self._add(
                "netem",
                self._python(
                    "lab.netem",
                    "--udp-listen",
                    f"{host}:{self.netem_udp_port}",
                    "--udp-upstream",
                    f"{host}:{self.relay_port}",
                    "--tcp-listen",
                    f"{host}:{self.netem_tcp_port}",
                    "--tcp-upstream",
                    f"{host}:{self.signaling_port}",
                    "--control",
                    f"{host}:{self.netem_control_port}",
                    *cfg.netem_args,
                ),
                f"{self.netem_control_url}/healthz",
            )
        public_host, public_port = self.public_address
        forwarding = ["--media-socket", cfg.media_socket, "--forward", cfg.forward]
        if self.relay_internal_port is not None:
            forwarding += ["--trusted-relay", f"{host}:{self.relay_internal_port}"]
        for index, port in enumerate(self.media_ports):
            topology = (
                ["--topology", "relay", "--relay", f"{public_host}:{public_port}"]
                if self.has_relay
                else ["--topology", "direct"]
            )
            self._add(
                f"media-{index + 1}",
                self._python(
                    "webrtc_server",
                    "--listen",
                    f"{host}:{port}",
                    "--backend-id",
                    str(index + 1),
                    "--bind-host",
                    host,
                    *topology,
                    *forwarding,
                    *cfg.media_args,
                ),
                f"http://{host}:{port}/healthz",
            )
        media = [
            arg
            for index in range(len(self.media_ports))
            for arg in ("--media", self.media_url(index))
        ]
        self._add(
            "signaling",
            self._python(
                "signaling",
                "--listen",
                f"{host}:{self.signaling_port}",
                *media,
                *cfg.signaling_args,
            ),
            f"{self.signaling_url}/healthz",
        )

    def _add(self, name: str, argv: list[str], health_url: str) -> None:
        self.children[name] = Child(name, argv, health_url, self.log_dir / f"{name}.log")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RTCLAB_SECRET"] = self.config.secret
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # --- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        env = self._env()
        # Relay and media first, signaling last: signaling polls the media servers.
        for child in self.children.values():
            await child.start(env)
        try:
            await self.wait_healthy(self.children.values())
        except BaseException:
            await self.stop()
            raise

    async def wait_healthy(
        self, children: Sequence[Child] | Any, timeout_s: float | None = None
    ) -> None:
        """Wait until every child answers /healthz (signaling: with all backends healthy)."""
        deadline = time.monotonic() + (timeout_s or self.config.ready_timeout_s)
        pending = list(children)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while pending:
                child = pending[0]
                if not child.running:
                    code = child.process.returncode if child.process else None
                    raise StackError(
                        f"{child.name} exited with {code}; see {child.log_path}:\n"
                        + tail(child.log_path)
                    )
                if await self._healthy(http, child):
                    pending.pop(0)
                    continue
                if time.monotonic() > deadline:
                    raise StackError(f"{child.name} not healthy in time; see {child.log_path}")
                await asyncio.sleep(0.1)

    async def _healthy(self, http: aiohttp.ClientSession, child: Child) -> bool:
        if child.health_url.startswith("redis://"):
            return await redis_answers(child.health_url)
        try:
            async with http.get(child.health_url) as response:
                if response.status != 200:
                    return False
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return False
        if child.name == "signaling":
            # Ready means it can place calls on every media server that is running.
            expected = sum(
                1 for c in self.children.values() if c.name.startswith("media-") and c.running
            )
            return int(body.get("backends_healthy", expected)) >= expected
        return True

    async def stop(self) -> dict[str, int | None]:
        """Stop every child (signaling first, so no new calls land mid-stop)."""
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.children)):
            codes[name] = await self.children[name].stop()
        log.info("stack stopped", extra={"exit_codes": codes})
        return codes

    # --- actions for scenarios ------------------------------------------------

    def child(self, name: str) -> Child:
        try:
            return self.children[name]
        except KeyError as exc:
            raise StackError(f"no part named {name!r}; have {sorted(self.children)}") from exc

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.child(name)
        child.send_signal(sig)
        await child.wait(10.0)
        log.info("killed", extra={"part": name, "signal": signal.Signals(sig).name})

    async def restart(self, name: str) -> None:
        """Start a stopped (or killed) part again with the same arguments and wait for health."""
        child = self.child(name)
        if child.running:
            await child.stop()
        await child.start(self._env())
        await self.wait_healthy([child])

    async def drain(self, index: int) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.media_url(index)}/drain") as r,
        ):
            r.raise_for_status()

    async def get_json(self, url: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
            response.raise_for_status()
            return await response.json()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("state=redis needs redis-server (Debian: apt-get install redis-server)")
    return found


async def redis_answers(url: str) -> bool:
    """True if the Redis server at ``redis://host:port`` answers PING."""
    host, _, port = url.removeprefix("redis://").partition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc/PID/stat, in seconds (None if unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_pressure_seconds() -> float | None:
    """Time some runnable task waited for a CPU, since boot (Linux PSI), or None.

    Its rate over an interval is the share of that interval in which the machine had
    more work than cores.  (/proc/stat's busy ticks are no substitute: they are sampled
    at the timer tick, and audio's 20 ms bursts alias with it; here they read a third
    of what the processes' own precise counters add up to.)
    """
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                total_us = line.rsplit("total=", 1)[1]
                return int(total_us) / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
