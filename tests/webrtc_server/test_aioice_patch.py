"""The aiortc/aioice internals webrtc_server.aioice_patch relies on.

If one of these fails after an upgrade, read the failure message: it names the
attribute that moved and the versions the patch was written for.
"""

from __future__ import annotations

import asyncio
import importlib.metadata

import aioice.ice
import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceGatherer,
    RTCPeerConnection,
)

from tests.webrtc_server.conftest import eventually, udp_ports_open
from tests.webrtc_server.stun_probe import connectivity_check
from webrtc_server import aioice_patch
from wire import route_token, stun

TOUCHED = {
    "aioice.ice.get_host_addresses",
    "aiortc.RTCIceGatherer._connection",
    "aioice.ice.Connection._local_username",
    "aioice.ice.Connection._local_password",
    "aioice.ice.Connection._nominated",
    "aioice.ice.CandidatePair.local_addr",
    "aioice.ice.CandidatePair.remote_addr",
    "aioice.ice.Connection.get_component_candidates",
    "aioice.ice.Connection.gather_candidates",
    "aioice.ice.Connection._protocols",
    "aioice.ice.StunProtocol",
    "aioice.candidate.candidate_foundation",
    "aioice.candidate.candidate_priority",
}


def test_every_private_attribute_used_is_where_the_patch_expects_it() -> None:
    assert set(aioice_patch.check_internals()) == TOUCHED


def test_installed_versions_are_the_ones_the_patch_was_written_for() -> None:
    for package, series in aioice_patch.PINNED_VERSIONS.items():
        installed = importlib.metadata.version(package)
        assert installed.startswith(series + "."), (
            f"{package} {installed} is installed but webrtc_server.aioice_patch was written "
            f"for {package} {series}.x: check every attribute it touches ({sorted(TOUCHED)}), "
            "then update PINNED_VERSIONS and the pins in pyproject.toml."
        )


async def _gather(address: str) -> RTCIceGatherer:
    gatherer = RTCIceGatherer(iceServers=[])
    with aioice_patch.bind_addresses([address]):
        await gatherer.gather()
    return gatherer


async def test_gathering_binds_only_the_chosen_address() -> None:
    # Stock aioice skips loopback entirely: on a machine with only `lo` it gathers nothing.
    gatherer = await _gather("127.0.0.1")
    try:
        candidates = gatherer.getLocalCandidates()
        assert [(c.ip, c.type, c.protocol) for c in candidates] == [("127.0.0.1", "host", "udp")]
        assert candidates[0].port in udp_ports_open()
    finally:
        await aioice_patch.connection_of(gatherer).close()
    assert candidates[0].port not in udp_ports_open()


async def test_the_bind_address_belongs_to_the_task_that_gathers() -> None:
    first, second = await asyncio.gather(_gather("127.0.0.1"), _gather("127.0.0.2"))
    try:
        assert [c.ip for c in first.getLocalCandidates()] == ["127.0.0.1"]
        assert [c.ip for c in second.getLocalCandidates()] == ["127.0.0.2"]
    finally:
        for gatherer in (first, second):
            await aioice_patch.connection_of(gatherer).close()


async def test_local_credentials_reach_the_ice_agent() -> None:
    secret = b"patch-test"
    gatherer = await _gather("127.0.0.1")
    try:
        port = gatherer.getLocalCandidates()[0].port
        ufrag = route_token.encode(secret, 7, port)
        password = route_token.ice_password(secret, ufrag)
        aioice_patch.set_local_credentials(gatherer, ufrag, password)
        parameters = gatherer.getLocalParameters()
        assert (parameters.usernameFragment, parameters.password) == (ufrag, password)

        # The agent itself now answers checks for this ufrag, signed with this password ...
        reply = await connectivity_check(port, f"{ufrag}:peer", password)
        assert reply is not None and reply.is_success
        # ... and refuses the wrong password and a ufrag that is not its own.
        wrong = await connectivity_check(port, f"{ufrag}:peer", "x" * 24)
        assert wrong is not None and wrong.message_class is stun.MessageClass.ERROR
        assert wrong.get(stun.Attr.ERROR_CODE)[0] == 401
        other = await connectivity_check(port, "AAAAAAAA:peer", password)
        assert other is not None and other.get(stun.Attr.ERROR_CODE)[0] == 401
    finally:
        await aioice_patch.connection_of(gatherer).close()


async def test_selected_pair_of_a_real_connection() -> None:
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    offerer, answerer = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        offerer.createDataChannel("probe")
        assert aioice_patch.peer_selected_pair(offerer) is None
        with aioice_patch.bind_addresses(["127.0.0.1"]):
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        await eventually(
            lambda: offerer.iceConnectionState == answerer.iceConnectionState == "completed"
        )
        offer_side = aioice_patch.peer_selected_pair(offerer)
        answer_side = aioice_patch.peer_selected_pair(answerer)
        assert offer_side is not None and answer_side is not None
        assert offer_side == (answer_side[1], answer_side[0])
        assert offer_side[0][0] == "127.0.0.1"
    finally:
        await offerer.close()
        await answerer.close()


def test_a_moved_attribute_fails_loudly_with_names_and_versions() -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    del aioice_patch.connection_of(gatherer)._nominated
    transport = type("FakeTransport", (), {"iceGatherer": gatherer})()
    with pytest.raises(aioice_patch.InternalsMoved) as raised:
        aioice_patch.selected_pair(transport)
    message = str(raised.value)
    assert "aioice.ice.Connection._nominated" in message
    assert "aiortc 1.16.x" in message and "aioice 0.13.x" in message


class RecordingTransport(asyncio.DatagramTransport):
    """A transport a test owns: what aioice sends through it, and whether it closed it."""

    def __init__(self, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: object = None) -> None:
        assert isinstance(addr, tuple)
        self.sent.append((bytes(data), addr))

    def close(self) -> None:
        self.closed = True
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_gather_on_makes_the_host_candidate_a_socket_the_caller_owns() -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    transports: list[RecordingTransport] = []

    def attach(protocol: asyncio.DatagramProtocol) -> tuple[str, int]:
        transport = RecordingTransport(protocol)
        protocol.connection_made(transport)
        transports.append(transport)
        return ("127.0.0.1", 45678)

    aioice_patch.gather_on(gatherer, attach)
    with aioice_patch.bind_addresses(["127.0.0.1"]):
        await gatherer.gather()
    connection = aioice_patch.connection_of(gatherer)
    try:
        candidates = gatherer.getLocalCandidates()
        assert [(c.ip, c.port, c.type) for c in candidates] == [("127.0.0.1", 45678, "host")]
        # aioice's only protocol is the one on our transport: it bound no socket of its own.
        assert [p.transport for p in connection._protocols] == transports

        # The ICE agent answers a check delivered to the protocol, through our transport.
        secret = b"patch-test"
        ufrag = route_token.encode(secret, 7, 45678)
        password = route_token.ice_password(secret, ufrag)
        aioice_patch.set_local_credentials(gatherer, ufrag, password)
        request = stun.binding_request(b"gather-on-01", f"{ufrag}:peer", password)
        transports[0].protocol.datagram_received(request, ("127.0.0.9", 5000))
        await eventually(lambda: bool(transports[0].sent))
        reply, destination = transports[0].sent[0]
        assert destination == ("127.0.0.9", 5000)
        answer = stun.parse(reply)
        assert answer.is_success and answer.transaction_id == b"gather-on-01"
        assert stun.check_integrity(answer, reply, password.encode())
    finally:
        await connection.close()
    assert transports[0].closed, "aioice did not close the transport it was given"


def test_gathering_internals_that_move_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    gatherer = RTCIceGatherer(iceServers=[])
    del aioice_patch.connection_of(gatherer)._protocols
    with pytest.raises(aioice_patch.InternalsMoved, match=r"Connection\._protocols"):
        aioice_patch.gather_on(gatherer, lambda protocol: ("127.0.0.1", 1))
    monkeypatch.setattr(aioice.ice.Connection, "get_component_candidates", lambda self: None)
    with pytest.raises(aioice_patch.InternalsMoved, match="get_component_candidates"):
        aioice_patch.check_internals()


def test_a_missing_gathering_function_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    with pytest.raises(aioice_patch.InternalsMoved, match=r"aioice\.ice\.get_host_addresses"):
        aioice_patch.check_internals()
