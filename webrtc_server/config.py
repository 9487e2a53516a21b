"""The media server's configuration, as one frozen value."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.turns import AgentConfig
from wire.addr import Address
from wire.route_token import DEV_SECRET


class MediaSocketMode(enum.Enum):
    SHARED = "shared"  # one UDP socket for every session: the published design
    PER_SESSION = "per-session"  # one UDP socket (and port) per session


class Forward(enum.Enum):
    """How the relay in front passes datagrams on (its ``--forward``)."""

    NAT = "nat"  # from one relay socket per flow, as they are: the peer is the relay
    ENCAP = "encap"  # behind a PROXY v2 header naming the client: the peer is the client


class Topology(enum.Enum):
    RELAY = "relay"  # the answer names the relay's public address; callers never see us
    DIRECT = "direct"  # the answer names the session's own socket


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Route tokens carry it; the relay maps it to this server's host.
    backend_id: int = 1
    # Media sockets bind here only (aioice would take every interface).
    bind_host: str = "127.0.0.1"
    # One socket for every session, as published; per-session is the earlier choice.
    media_socket: MediaSocketMode = MediaSocketMode.SHARED
    # The shared socket's port.  0 lets the kernel choose: route tokens carry the
    # port, so the relay needs no configuration for it.
    media_port: int = 0
    # What the relay's datagrams look like; it must match the relay's --forward.
    forward: Forward = Forward.NAT
    # encap: the only sources whose PROXY headers are believed, as IP literals
    # ("10.0.0.1": any port of that host) or (host, port).  The spec's advice:
    # a header from anyone else lets them speak as any client.
    trusted_relays: tuple[str | Address, ...] = ()
    # Every session's media shares the socket's kernel buffer (capped at rmem_max).
    socket_buffer_bytes: int = 4 * 1024 * 1024
    topology: Topology = Topology.RELAY
    # The relay's public address, advertised as the only candidate (relay topology).
    relay: Address = ("127.0.0.1", 3478)
    # Signs route tokens and derives ICE passwords; the relay must hold the same.
    secret: bytes = DEV_SECRET
    # A caller that has not connected by then never will: ICE+DTLS take well under
    # a second on loopback and a few RTTs anywhere, and aioice would wait forever.
    setup_timeout_s: float = 15.0
    agent: AgentConfig = field(default_factory=AgentConfig)
    # Offers are a few KiB; the same limit as signaling's.
    max_offer_bytes: int = 64 * 1024
    # Tell clients refused while draining to try again after this long.
    drain_retry_after_s: int = 5
    # Sessions answered but not yet connected, at most.  Each holds a peer
    # connection, a UDP socket and a DTLS certificate until its caller connects
    # or the setup timeout closes it; offers whose callers never arrive must not
    # pile up without bound.  A caller connects within ~0.1 s on loopback, so 64
    # in flight is hundreds of call attempts a second, beyond what one aiortc
    # server on these cores sustains in calls.
    max_pending_setups: int = 64
    # Refused for that reason: try again after this long (a setup slot frees
    # as soon as one caller connects, or times out).
    pending_retry_after_s: int = 2

    def advertised(self, session_port: int) -> Address:
        """The one candidate the answer names for a session bound to ``session_port``."""
        if self.topology is Topology.RELAY:
            return self.relay
        return (self.bind_host, session_port)
