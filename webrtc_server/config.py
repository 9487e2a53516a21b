"""The media server's configuration, as one frozen value."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.turns import AgentConfig
from wire.addr import Address
from wire.route_token import DEV_SECRET


class Topology(enum.Enum):
    RELAY = "relay"  # the answer names the relay's public address; callers never see us
    DIRECT = "direct"  # the answer names the session's own socket


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Route tokens carry it; the relay maps it to this server's host.
    backend_id: int = 1
    # Sessions bind their UDP socket here only (aioice would take every interface).
    bind_host: str = "127.0.0.1"
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

    def advertised(self, session_port: int) -> Address:
        """The one candidate the answer names for a session bound to ``session_port``."""
        if self.topology is Topology.RELAY:
            return self.relay
        return (self.bind_host, session_port)
