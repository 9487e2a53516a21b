"""Relay configuration: one frozen dataclass, built from layers of option values.

The same option names work on the command line and in a TOML file::

    listen = "0.0.0.0:3478"
    admin = "127.0.0.1:9478"
    backend = ["1=10.0.0.11", "2=10.0.0.12"]   # or a table: [backend] 1 = "10.0.0.11"
    rebind = "verified"
    verify-integrity = true
    idle-timeout = 30
    max-flows = 10000
    loop = "uvloop"
    secret = "..."
    workers = 2
    reuse-port = true
    state = "redis://127.0.0.1:6379/0"
    forward = "encap"
    internal = "10.0.0.1:3479"

:func:`build_config` folds layers in order (defaults, file, environment,
command line), later layers winning; backends merge per id, so a file can list
them all and the command line override one.
"""

from __future__ import annotations

import enum
import ipaddress
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wire import route_token
from wire.addr import Address, parse_hostport


class ConfigError(ValueError):
    """An option value (from the command line or a file) is not usable."""


class RebindPolicy(enum.Enum):
    """What a STUN request from a new address naming a known session does.

    OFF opens a new flow (the published design); VERIFIED reuses the
    session's upstream socket and moves the client once the backend accepts a
    check from the new address; SSRC also moves on a known RTP SSRC (lab only:
    unauthenticated).
    """

    OFF = "off"
    VERIFIED = "verified"
    SSRC = "ssrc"


class ForwardMode(enum.Enum):
    """How a flow's datagrams reach its media server.

    NAT sends them from one connected upstream socket per flow, as they are:
    the media server's peer is that socket.  ENCAP sends them from the
    relay's one internal socket behind a PROXY protocol v2 header naming the
    client, so the media server's peer is the client's own address; its
    replies carry the header back and go out to the address it names.
    """

    NAT = "nat"
    ENCAP = "encap"


class LoopKind(enum.Enum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    # STUN's registered port, and where the published design's relay listens.
    listen: Address = ("127.0.0.1", 3478)
    # Loopback: flow lists show client addresses, not something for the internet.
    admin: Address = ("127.0.0.1", 9478)
    # Backend id (from the route token) -> media server host.  Empty: the relay
    # routes nothing, so the command line insists on at least one.
    backends: Mapping[int, str] = field(default_factory=dict)
    # Shared with the media servers; the built-in key is for loopback labs only.
    secret: bytes = route_token.DEV_SECRET
    # The published design's behaviour, so measurements reproduce it by default.
    rebind: RebindPolicy = RebindPolicy.OFF
    # The published relay reads USERNAME only; checking costs one HMAC per new flow.
    verify_integrity: bool = False
    # > 6 consent intervals (~5 s each, RFC 7675): a live ICE session always
    # refreshes its flow, and an agent gives up on a silent peer at about this age.
    idle_timeout_s: float = 30.0
    # Each flow holds one upstream socket, i.e. one file descriptor; the shell
    # raises the open-files limit to fit.  When full, new flows are refused and
    # live ones are never evicted (see the --max-flows help).
    max_flows: int = 10_000
    # Checks from new addresses awaiting the backend's answer, per flow (rebind
    # verified/ssrc): a client with several interfaces checks from each.
    pending_checks_per_flow: int = 16
    # The backend answers a forwarded check within milliseconds and every
    # retransmission refreshes the entry, so a few seconds is generous.
    pending_check_ttl_s: float = 5.0
    # Check transaction ids remembered per flow, so a captured check replayed
    # from another address cannot move the flow (rebind verified/ssrc).  A
    # client checks every 2-5 s (consent, RFC 7675), retransmitting with the same
    # id: 32 covers the last one to three minutes in ~3 KiB per flow.  An older
    # check replayed still moves the flow: STUN carries no freshness, and the
    # media server answers any check its password signed (docs/reliability.md).
    checks_per_flow: int = 32
    # Kernel socket buffers: absorb bursts while the loop is busy elsewhere
    # (the kernel caps this at net.core.rmem_max / wmem_max).
    socket_buffer_bytes: int = 4 * 1024 * 1024
    # The faster loop (wire.service.run falls back to asyncio where uvloop is
    # not installed); "relay listening" logs the loop actually running.
    loop: LoopKind = LoopKind.UVLOOP
    # One process, as published for a single relay; more share the port (below).
    workers: int = 1
    # Off: a second process binding the same port fails loudly instead of
    # silently taking half the clients.  On (implied by workers > 1), several
    # processes of the same user share the port and the kernel spreads client
    # addresses over them (SO_REUSEPORT).
    reuse_port: bool = False
    # None: flows live only in this process's table (the published relay's
    # in-memory entry).  A redis:// URL: flows are also written to Redis so
    # another relay on the same address can take them over.
    state_url: str | None = None
    # Today's connected socket per flow; the published design does not say.
    forward: ForwardMode = ForwardMode.NAT
    # encap: the socket towards the media servers (their --trusted-relay); unused
    # under nat, so one configuration can serve both modes.  None:
    # the listen host on an ephemeral port -- fine for one relay that never
    # restarts; give a fixed port so a restarted relay (or several sharing it
    # with --reuse-port) is where the media servers already send.
    internal: Address | None = None

    # --- shared state (only with state_url); see stun_lb.core.state ----------
    # A Redis round trip on a LAN is well under a millisecond, and an audio
    # stream sends one packet per 20 ms: 4 packets is 80 ms of waiting, more
    # than any healthy lookup needs.  Later packets are dropped, not queued.
    lookup_hold_packets: int = 4
    # Lookups in flight at once.  A dead relay's clients arrive within one
    # packet interval of each other; 128 concurrent GETs cost Redis a few
    # milliseconds, and a flood of forged sources beyond this is dropped here
    # without reaching Redis.
    max_lookups_in_flight: int = 128
    # Bytes held across all pending lookups: a bound on memory whatever the
    # datagram sizes (128 x 4 full-size datagrams would be 32 MiB).
    lookup_hold_bytes: int = 1024 * 1024
    # An address Redis did not know is not asked about again for this long.
    # Short, so a flow another relay writes moments later is still found soon;
    # long enough that a source sending 50 packets/s costs one lookup per second.
    negative_ttl_s: float = 1.0
    # Bound on remembered misses (a flood of unique forged sources); the
    # oldest is forgotten first.  64 Ki entries are a few MiB.
    negative_cache_size: int = 65536
    # Every Redis command gives up after this long: a lookup older than this
    # holds audio the jitter buffer has given up on anyway.
    state_timeout_s: float = 0.5
    # After a failed write the writer waits this long before trying again
    # (writes coalesce meanwhile), so a Redis outage costs it one attempt per
    # second, not one per new flow.
    state_retry_s: float = 1.0

    @property
    def internal_address(self) -> Address:
        """Where the encap socket binds: ``internal``, or the listen host on port 0."""
        return self.internal if self.internal is not None else (self.listen[0], 0)

    @property
    def uses_dev_secret(self) -> bool:
        return self.secret == route_token.DEV_SECRET

    @property
    def state_refresh_interval_s(self) -> float:
        """How often an active flow's entry is rewritten: a third of the idle timeout.

        Each write sets the entry to expire when the flow would, so an entry
        outlives its last refresh by at least two intervals: an active flow's
        entry never lapses, and an idle one lapses with the flow.
        """
        return self.idle_timeout_s / 3


# --- building from option values ---------------------------------------------

OPTION_KEYS = (
    "listen",
    "admin",
    "backend",
    "secret",
    "rebind",
    "verify-integrity",
    "idle-timeout",
    "max-flows",
    "loop",
    "workers",
    "reuse-port",
    "state",
    "forward",
    "internal",
)

STATE_SCHEMES = ("redis", "rediss", "unix")


def parse_state(text: str) -> str | None:
    """``memory`` -> None; a Redis URL (``redis://HOST:PORT[/DB]``) -> the URL, checked."""
    text = str(text).strip()
    if text.lower() == "memory":
        return None
    url = urllib.parse.urlsplit(text)
    if url.scheme not in STATE_SCHEMES:
        raise ConfigError(f"state must be memory or redis://HOST:PORT[/DB], not {text!r}")
    if url.scheme == "unix":
        if not url.path:
            raise ConfigError(f"state {text!r}: no socket path")
        return text
    try:
        port = url.port
    except ValueError as exc:
        raise ConfigError(f"state {text!r}: {exc}") from exc
    if not url.hostname:
        raise ConfigError(f"state {text!r}: no host")
    if port is None:
        raise ConfigError(f"state {text!r}: no port (Redis listens on 6379 by default)")
    db = url.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"state {text!r}: the database must be a number, not {db!r}")
    return text


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and /healthz."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def parse_backend(text: str) -> tuple[int, str]:
    """``ID=HOST`` -> ``(id, host)``."""
    id_text, sep, host = str(text).partition("=")
    if not sep or not host.strip():
        raise ConfigError(f"backend {text!r} is not ID=HOST")
    return _backend_id(id_text), _host(host.strip())


def _backend_id(value: Any) -> int:
    try:
        backend_id = int(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"backend id {value!r} is not an integer") from exc
    if not 0 <= backend_id <= 0xFFFF:
        raise ConfigError(f"backend id {backend_id} is not in 0..65535 (the token's field)")
    return backend_id


def _host(text: str) -> str:
    # An IPv6 literal may come bracketed, as in URLs; the socket wants it bare.
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not host:
        raise ConfigError("empty backend host")
    return host


def _backends(value: Any) -> dict[int, str]:
    if isinstance(value, Mapping):
        return {_backend_id(key): _host(str(host).strip()) for key, host in value.items()}
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ConfigError(f"backend must be ID=HOST strings or a table, not {value!r}")
    return dict(parse_backend(item) for item in value)


def _address(key: str, value: Any) -> Address:
    try:
        return parse_hostport(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _number(key: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, not {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be a number, not {value!r}") from exc
    if number < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, not {number}")
    return number


def _choice(key: str, value: Any, kind: type[enum.Enum]) -> Any:
    try:
        return kind(str(value).lower())
    except ValueError as exc:
        choices = "|".join(str(member.value) for member in kind)
        raise ConfigError(f"{key} must be one of {choices}, not {value!r}") from exc


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    return value


def build_config(
    layers: Iterable[Mapping[str, Any]], base: RelayConfig | None = None
) -> RelayConfig:
    """Fold layers of ``{option name: value}`` onto ``base``; later layers win.

    Option names are those of the command line without dashes in front
    (``max-flows``; ``max_flows`` is accepted too).  Values may be text or
    native TOML values.  Unknown names raise :class:`ConfigError`, so a typo
    in a file does not silently fall back to a default.
    """
    config = base or RelayConfig()
    backends = dict(config.backends)
    changes: dict[str, Any] = {}
    for layer in layers:
        for raw_key, value in layer.items():
            key = raw_key.replace("_", "-")
            if key in ("backend", "backends"):
                backends.update(_backends(value))
            elif key == "listen":
                changes["listen"] = _address(key, value)
            elif key == "admin":
                changes["admin"] = _address(key, value)
            elif key == "secret":
                changes["secret"] = route_token.secret_from_text(str(value))
            elif key == "rebind":
                changes["rebind"] = _choice(key, value, RebindPolicy)
            elif key == "verify-integrity":
                changes["verify_integrity"] = _flag(key, value)
            elif key == "idle-timeout":
                changes["idle_timeout_s"] = _number(key, value, float, 0.001)
            elif key == "max-flows":
                changes["max_flows"] = _number(key, value, int, 1)
            elif key == "loop":
                changes["loop"] = _choice(key, value, LoopKind)
            elif key == "workers":
                changes["workers"] = _number(key, value, int, 1)
            elif key == "reuse-port":
                changes["reuse_port"] = _flag(key, value)
            elif key == "state":
                changes["state_url"] = parse_state(value)
            elif key == "forward":
                changes["forward"] = _choice(key, value, ForwardMode)
            elif key == "internal":
                changes["internal"] = _address(key, value)
            else:
                known = ", ".join(OPTION_KEYS)
                raise ConfigError(f"unknown option {raw_key!r} (known: {known})")
    config = replace(config, backends=backends, **changes)
    if config.workers > 1:
        if changes.get("reuse_port") is False:
            raise ConfigError("workers > 1 share the port: reuse-port cannot be off")
        if config.listen[1] == 0:
            # Each worker would bind its own ephemeral port: no shared address.
            raise ConfigError("workers > 1 need a fixed listen port, not 0")
        config = replace(config, reuse_port=True)
    return config


def load_file(path: str | Path) -> dict[str, Any]:
    """The option values of a TOML file (checked by :func:`build_config`)."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
