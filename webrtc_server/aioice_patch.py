"""The ONLY module that touches aiortc/aioice private internals.

aiortc offers no way to choose the interfaces ICE gathers on, to set the local
ICE username fragment and password, or to read the selected candidate pair.
rtclab needs all three (DESIGN.md, call path step 3), so this module reaches
into the libraries at exactly these points, for the pinned versions below:

* ``aioice.ice.get_host_addresses`` (module function): replaced once by
  :func:`install` so gathering uses the addresses of :func:`bind_addresses`
  (a context variable, so concurrent peers in one process can differ).  Stock
  aioice gathers on every interface *except* loopback.
* ``RTCIceGatherer._connection`` (aiortc) -> the ``aioice.Connection``.
* ``Connection._local_username`` / ``Connection._local_password`` (aioice):
  set before the answer is created.  Munging ``a=ice-ufrag`` in SDP does not
  reach the agent; these attributes do.
* ``Connection._nominated`` (aioice): ``{component: CandidatePair}``, read for
  the selected pair's local and remote addresses.
* ``Connection.get_component_candidates`` (aioice), replaced on ONE connection
  by :func:`gather_on` so that its host candidate is an ``aioice.ice.StunProtocol``
  attached to a socket the media server owns (the shared socket) instead of a
  socket aioice binds; the protocol joins ``Connection._protocols`` as
  aioice's own would.  aioice then sends through the protocol's
  ``transport.sendto`` and closes it with ``transport.close()``, and the
  socket's owner delivers datagrams with ``protocol.datagram_received``: the
  protocol's public asyncio interface.

``tests/webrtc_server/test_aioice_patch.py`` checks every one of them and fails
with a message naming the attribute and these versions if one moves.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import inspect
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aioice.candidate
import aioice.ice
from aiortc import RTCIceGatherer, RTCIceTransport, RTCPeerConnection

from wire.addr import Address

PINNED_VERSIONS = {"aiortc": "1.16", "aioice": "0.13"}

# Loopback unless told otherwise: the lab's traffic stays on 127.0.0.0/8.
DEFAULT_BIND_ADDRESSES: tuple[str, ...] = ("127.0.0.1",)

_bind: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "rtclab_ice_bind_addresses", default=DEFAULT_BIND_ADDRESSES
)
_installed = False


class InternalsMoved(RuntimeError):
    """A private aiortc/aioice attribute this module relies on is gone or changed."""


def _moved(what: str, detail: str) -> InternalsMoved:
    return InternalsMoved(
        f"{what}: {detail}. webrtc_server.aioice_patch was written against "
        f"aiortc {PINNED_VERSIONS['aiortc']}.x and aioice {PINNED_VERSIONS['aioice']}.x; "
        f"installed: aiortc {_version('aiortc')}, aioice {_version('aioice')}. "
        "Re-read the library source and update the patch (and the version pins)."
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- gathering only on chosen addresses ---------------------------------------


def _chosen_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Stand-in for ``aioice.ice.get_host_addresses``: the bound addresses only."""
    chosen = []
    for address in _bind.get():
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            chosen.append(address)
    return chosen


def install() -> None:
    """Make aioice gather only on :func:`bind_addresses` (idempotent)."""
    global _installed
    if _installed:
        return
    original = getattr(aioice.ice, "get_host_addresses", None)
    if not callable(original):
        raise _moved("aioice.ice.get_host_addresses", "the function is missing")
    aioice.ice.get_host_addresses = _chosen_host_addresses
    _installed = True


@contextlib.contextmanager
def bind_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """ICE gathering started inside this block binds only to ``addresses``.

    A context variable, so it holds for the task that gathers (and tasks it
    starts) and not for peers gathering concurrently elsewhere.
    """
    for address in addresses:
        ipaddress.ip_address(address)  # a literal address, not a name
    install()
    token = _bind.set(tuple(addresses))
    try:
        yield
    finally:
        _bind.reset(token)


# --- the aioice connection behind a peer connection -------------------------------


def ice_transports(pc: RTCPeerConnection) -> list[RTCIceTransport]:
    """Every distinct ICE transport of ``pc`` (one when everything is bundled).

    Public aiortc API only; it lives here so the caller needs no other server module.
    """
    found: list[RTCIceTransport] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        if ice not in found:
            found.append(ice)
    if pc.sctp is not None:
        ice = pc.sctp.transport.transport
        if ice not in found:
            found.append(ice)
    return found


async def close_ice(pc: RTCPeerConnection) -> None:
    """Close the aioice connection (and so the UDP sockets) behind every ICE transport of
    ``pc``, even one gathered after ``pc.close()``, which does not close it again."""
    for ice in ice_transports(pc):
        await connection_of(ice.iceGatherer).close()


def connection_of(gatherer: RTCIceGatherer) -> Any:
    """The aioice ``Connection`` an aiortc gatherer drives (private ``_connection``)."""
    connection = getattr(gatherer, "_connection", None)
    if not isinstance(connection, aioice.ice.Connection):
        raise _moved("aiortc.RTCIceGatherer._connection", "not an aioice.ice.Connection")
    return connection


def set_local_credentials(gatherer: RTCIceGatherer, ufrag: str, password: str) -> None:
    """Make ``ufrag``/``password`` the agent's own ICE credentials.

    Must happen before the answer is created: aiortc reads them back through
    ``getLocalParameters()`` when it writes the SDP, and aioice checks every
    incoming connectivity check's USERNAME and MESSAGE-INTEGRITY against them.
    """
    aioice.ice.validate_username(ufrag)
    aioice.ice.validate_password(password)
    connection = connection_of(gatherer)
    for name in ("_local_username", "_local_password"):
        if not isinstance(getattr(connection, name, None), str):
            raise _moved(f"aioice.ice.Connection.{name}", "missing or not a str")
    connection._local_username = ufrag
    connection._local_password = password
    parameters = gatherer.getLocalParameters()
    if (parameters.usernameFragment, parameters.password) != (ufrag, password):
        raise _moved(
            "aioice.ice.Connection.local_username/local_password",
            "setting _local_username/_local_password no longer changes them",
        )


# --- gathering on a socket the media server owns -----------------------------------

# Given aioice's StunProtocol for one component, attach it to a socket (call its
# connection_made with a transport) and return the local address it sends from.
Attach = Callable[[Any], Address]


def gather_on(gatherer: RTCIceGatherer, attach: Attach) -> None:
    """Make ``gatherer`` gather ONE host candidate per component, on ``attach``'s socket.

    Call before ``gather()``.  Instead of binding a socket per candidate,
    aioice's connection creates its usual ``StunProtocol`` and hands it to
    ``attach``, which connects it to a transport of the caller's (the shared
    media socket's per-session endpoint) and says which address it sends
    from; that address becomes the host candidate.  Everything else --
    checks, consent, DTLS and SRTP over ``transport.sendto``, closing with
    ``transport.close()`` -- is aioice's unchanged.
    """
    connection = connection_of(gatherer)
    _check_gathering(connection)

    async def get_component_candidates(
        component: int, addresses: list[str], **_ignored: Any
    ) -> list[Any]:
        # No STUN or TURN server here (iceServers=[]): one host candidate is all.
        protocol = aioice.ice.StunProtocol(connection)
        host, port = attach(protocol)
        protocol.local_candidate = aioice.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=aioice.candidate.candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        connection._protocols.append(protocol)
        return [protocol.local_candidate]

    # An instance attribute: only this connection gathers this way.
    connection.get_component_candidates = get_component_candidates


def _check_gathering(connection: Any) -> None:
    method = getattr(type(connection), "get_component_candidates", None)
    if not inspect.iscoroutinefunction(method):
        raise _moved("aioice.ice.Connection.get_component_candidates", "missing or not async")
    if list(inspect.signature(method).parameters)[:3] != ["self", "component", "addresses"]:
        raise _moved(
            "aioice.ice.Connection.get_component_candidates",
            "no longer takes (component, addresses)",
        )
    if "self.get_component_candidates(" not in inspect.getsource(
        type(connection).gather_candidates
    ):
        raise _moved(
            "aioice.ice.Connection.gather_candidates",
            "no longer gathers through self.get_component_candidates",
        )
    if not isinstance(getattr(connection, "_protocols", None), list):
        raise _moved("aioice.ice.Connection._protocols", "missing or not a list")
    protocol = getattr(aioice.ice, "StunProtocol", None)
    if protocol is None or not all(
        callable(getattr(protocol, name, None))
        for name in ("connection_made", "datagram_received", "connection_lost", "close")
    ):
        raise _moved("aioice.ice.StunProtocol", "missing or not an asyncio DatagramProtocol")
    for name in ("candidate_foundation", "candidate_priority"):
        if not callable(getattr(aioice.candidate, name, None)):
            raise _moved(f"aioice.candidate.{name}", "the function is missing")


def selected_pair(ice: RTCIceTransport) -> tuple[Address, Address] | None:
    """``(local, remote)`` addresses of the nominated pair of component 1, or None."""
    connection = connection_of(ice.iceGatherer)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict):
        raise _moved("aioice.ice.Connection._nominated", "missing or not a dict")
    pair = nominated.get(1)
    if pair is None:
        return None
    local, remote = pair.local_addr, pair.remote_addr
    return (str(local[0]), int(local[1])), (str(remote[0]), int(remote[1]))


def peer_selected_pair(pc: RTCPeerConnection) -> tuple[Address, Address] | None:
    """The selected pair of ``pc``'s (first) ICE transport, or None before ICE completes."""
    transports = ice_transports(pc)
    return selected_pair(transports[0]) if transports else None


async def inbound_rtp(receiver: Any) -> tuple[int, int] | None:
    """(packets received, packets lost) as the receiver's RTP stack counted them.

    Lost here means missing RTP sequence numbers on the wire, before aiortc's
    jitter buffer, which discards more frames after a gap: comparing this with
    what the listener got separates network loss from receiver loss.  Public
    API (getStats), kept here with the rest of what depends on aiortc's
    particular behaviour.
    """
    try:
        report = await receiver.getStats()
    except Exception:  # a closed transport raises; there is simply no report
        return None
    for stats in report.values():
        if (
            getattr(stats, "type", None) == "inbound-rtp"
            and getattr(stats, "kind", None) == "audio"
        ):
            return int(stats.packetsReceived), int(stats.packetsLost)
    return None


def check_internals() -> list[str]:
    """Every private attribute this module uses, checked on fresh objects.

    Returns the attributes checked; raises :class:`InternalsMoved` naming the
    first one that is gone.  Cheap: builds one gatherer, binds no socket.
    """
    checked = []
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise _moved("aioice.ice.get_host_addresses", "the function is missing")
    checked.append("aioice.ice.get_host_addresses")
    gatherer = RTCIceGatherer(iceServers=[])
    connection = connection_of(gatherer)
    checked.append("aiortc.RTCIceGatherer._connection")
    for name, kind in (("_local_username", str), ("_local_password", str), ("_nominated", dict)):
        if not isinstance(getattr(connection, name, None), kind):
            raise _moved(f"aioice.ice.Connection.{name}", f"missing or not a {kind.__name__}")
        checked.append(f"aioice.ice.Connection.{name}")
    for name in ("local_addr", "remote_addr"):
        if not isinstance(getattr(aioice.ice.CandidatePair, name, None), property):
            raise _moved(f"aioice.ice.CandidatePair.{name}", "no longer a property")
        checked.append(f"aioice.ice.CandidatePair.{name}")
    _check_gathering(connection)
    checked += [
        "aioice.ice.Connection.get_component_candidates",
        "aioice.ice.Connection.gather_candidates",
        "aioice.ice.Connection._protocols",
        "aioice.ice.StunProtocol",
        "aioice.candidate.candidate_foundation",
        "aioice.candidate.candidate_priority",
    ]
    return checked
