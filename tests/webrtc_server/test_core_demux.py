"""The shared media socket's demultiplexer, in virtual time: by address, by ufrag, drops, moves."""

from __future__ import annotations

import itertools

import pytest

from webrtc_server.core.demux import (
    DROP_REASONS,
    Deliver,
    Demux,
    DemuxConfig,
    DemuxCounters,
    Drop,
    SendTo,
    Trust,
)
from wire import proxy_protocol, stun

RELAY_UP_1 = ("10.0.0.1", 40001)  # nat: the relay's upstream socket of one flow
RELAY_UP_2 = ("10.0.0.1", 40002)
RELAY_INTERNAL = ("10.0.0.1", 3479)  # encap: the relay's socket towards media servers
PUBLIC = ("203.0.113.10", 3478)
CALLER_A = ("198.51.100.7", 5000)
CALLER_A_MOVED = ("198.51.100.99", 6000)
CALLER_B = ("192.0.2.44", 7000)
DTLS = b"\x16\xfe\xfd" + bytes(40)
RTP = b"\x80\x6f" + bytes(170)
STUN_SUCCESS = stun.binding_success(b"t" * 12, ("192.0.2.1", 1), "p" * 22)

_tids = itertools.count(1)


def check(server_ufrag: str, client_ufrag: str = "cli1") -> bytes:
    tid = next(_tids).to_bytes(12, "big")
    return stun.binding_request(tid, f"{server_ufrag}:{client_ufrag}", "x" * 22)


def encap(client: tuple[str, int], data: bytes) -> bytes:
    return proxy_protocol.encode(client, PUBLIC) + data


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def tick(self, seconds: float = 0.02) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def nat_demux() -> Demux[str]:
    demux: Demux[str] = Demux(DemuxConfig())
    assert demux.register("ufragAAAA", "a") and demux.register("ufragBBBB", "b")
    return demux


def encap_demux(trusted: Trust | None = None) -> Demux[str]:
    trust = trusted or Trust.of([RELAY_INTERNAL])
    demux: Demux[str] = Demux(DemuxConfig(encap=True, trusted=trust))
    assert demux.register("ufragAAAA", "a") and demux.register("ufragBBBB", "b")
    return demux


def session_of(decision: Deliver[str] | Drop) -> str:
    assert isinstance(decision, Deliver), decision
    return decision.session


def reply_of(decision: SendTo | Drop) -> SendTo:
    assert isinstance(decision, SendTo), decision
    return decision


def test_first_check_routes_by_ufrag_then_everything_by_address(clock: Clock) -> None:
    demux = nat_demux()
    # Before any check, the relay's flow port is nobody's.
    assert demux.route(DTLS, RELAY_UP_1, clock.tick()) == Drop("unknown_source")
    decision = demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick())
    assert decision == Deliver("a", RELAY_UP_1, 0)
    for data in (DTLS, RTP, STUN_SUCCESS):
        assert demux.route(data, RELAY_UP_1, clock.tick()) == Deliver("a", RELAY_UP_1, 0)
    # Another flow, another session: its own check, then its own address.
    assert session_of(demux.route(check("ufragBBBB"), RELAY_UP_2, clock.tick())) == "b"
    assert demux.route(RTP, RELAY_UP_2, clock.tick()) == Deliver("b", RELAY_UP_2, 0)
    assert demux.route(RTP, RELAY_UP_1, clock.tick()) == Deliver("a", RELAY_UP_1, 0)
    assert demux.counters.delivered == 7


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (check("ufragZZZZ"), "unknown_ufrag"),
        (stun.build(stun.Method.BINDING, stun.MessageClass.REQUEST, b"n" * 12), "no_username"),
        (b"\x00\x01\x00\x00" + bytes(16) + b"junk", "malformed_stun"),
        (STUN_SUCCESS, "unknown_source"),
        (DTLS, "unknown_source"),
        (b"\xff\xff", "unknown_source"),
    ],
    ids=["unknown_ufrag", "no_username", "malformed_stun", "stun_response", "dtls", "garbage"],
)
def test_unknown_addresses_get_only_checks_naming_a_session(
    clock: Clock, data: bytes, reason: str
) -> None:
    demux = nat_demux()
    assert demux.route(data, CALLER_A, clock.tick()) == Drop(reason)
    assert demux.counters.drops[reason] == 1
    assert sum(demux.counters.drops.values()) == 1
    assert set(demux.counters.drops) == set(DROP_REASONS)


def test_a_known_address_checking_an_unknown_ufrag_reaches_its_own_session(clock: Clock) -> None:
    # Its session's ICE agent answers it (401), as it would on a socket of its own.
    demux = nat_demux()
    demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick())
    assert demux.route(check("ufragZZZZ"), RELAY_UP_1, clock.tick()) == Deliver("a", RELAY_UP_1)


def test_a_session_owns_several_addresses_and_replies_to_each(clock: Clock) -> None:
    demux = nat_demux()
    demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick())
    # rebind=off: the moved client's check comes through a new relay flow.
    demux.route(check("ufragAAAA"), RELAY_UP_2, clock.tick())
    assert [r.address for r in demux.remotes("a")] == [RELAY_UP_1, RELAY_UP_2]
    assert session_of(demux.route(RTP, RELAY_UP_1, clock.tick())) == "a"
    assert session_of(demux.route(RTP, RELAY_UP_2, clock.tick())) == "a"
    assert demux.route_reply("a", RELAY_UP_1) == SendTo(RELAY_UP_1)
    assert demux.route_reply("a", RELAY_UP_2) == SendTo(RELAY_UP_2)
    # Nobody else may send to them, and nobody sends to an address never heard from.
    assert demux.route_reply("b", RELAY_UP_1) == Drop("no_route")
    assert demux.route_reply("a", CALLER_B) == Drop("no_route")
    assert demux.counters.sent == 2 and demux.counters.drops["no_route"] == 2


def test_the_least_recently_heard_address_is_forgotten_beyond_the_bound(clock: Clock) -> None:
    demux: Demux[str] = Demux(DemuxConfig(max_remotes_per_session=3))
    demux.register("ufragAAAA", "a")
    ports = [("10.0.0.1", 41000 + i) for i in range(4)]
    for port in ports[:3]:
        demux.route(check("ufragAAAA"), port, clock.tick())
    demux.route(RTP, ports[0], clock.tick())  # the oldest is still in use
    demux.route(check("ufragAAAA"), ports[3], clock.tick())
    assert {r.address for r in demux.remotes("a")} == {ports[0], ports[2], ports[3]}
    assert demux.route(RTP, ports[1], clock.tick()) == Drop("unknown_source")


def test_release_forgets_every_address_and_the_ufrag(clock: Clock) -> None:
    demux = nat_demux()
    demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick())
    demux.route(check("ufragAAAA"), RELAY_UP_2, clock.tick())
    assert sorted(demux.release("a")) == [RELAY_UP_1, RELAY_UP_2]
    for source in (RELAY_UP_1, RELAY_UP_2):
        assert demux.route(RTP, source, clock.tick()) == Drop("unknown_source")
    assert demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick()) == Drop("unknown_ufrag")
    assert demux.route_reply("a", RELAY_UP_1) == Drop("no_route")
    assert len(demux) == 1 and demux.release("a") == []
    # The ufrag is free for a new session.
    assert demux.register("ufragAAAA", "c")


def test_a_ufrag_has_one_owner() -> None:
    demux = nat_demux()
    assert not demux.register("ufragAAAA", "c")
    assert demux.register("ufragAAAA", "a")  # idempotent for its owner


def test_a_recycled_address_follows_the_check_that_names_another_session(clock: Clock) -> None:
    # nat: a relay upstream port closed with one call's flow may come back for another's.
    demux = nat_demux()
    demux.route(check("ufragAAAA"), RELAY_UP_1, clock.tick())
    assert session_of(demux.route(check("ufragBBBB"), RELAY_UP_1, clock.tick())) == "b"
    assert demux.route(DTLS, RELAY_UP_1, clock.tick()) == Deliver("b", RELAY_UP_1)
    assert demux.remotes("a") == []
    assert demux.route_reply("a", RELAY_UP_1) == Drop("no_route")


# --- encap ------------------------------------------------------------------------------


def test_encap_routes_by_the_client_address_in_the_header(clock: Clock) -> None:
    demux = encap_demux()
    header = proxy_protocol.encode(CALLER_A, PUBLIC)
    decision = demux.route(encap(CALLER_A, check("ufragAAAA")), RELAY_INTERNAL, clock.tick())
    assert decision == Deliver("a", CALLER_A, len(header))
    assert demux.route(encap(CALLER_A, RTP), RELAY_INTERNAL, clock.tick()) == Deliver(
        "a", CALLER_A, 28
    )
    # Replies go to the relay, behind the header the client's datagrams carried.
    assert demux.route_reply("a", CALLER_A) == SendTo(RELAY_INTERNAL, header)
    # Another client of another session through the same relay.
    demux.route(encap(CALLER_B, check("ufragBBBB")), RELAY_INTERNAL, clock.tick())
    assert session_of(demux.route(encap(CALLER_B, DTLS), RELAY_INTERNAL, clock.tick())) == "b"
    assert demux.route_reply("b", CALLER_B) == SendTo(
        RELAY_INTERNAL, proxy_protocol.encode(CALLER_B, PUBLIC)
    )


def test_encap_a_moved_client_is_a_second_address_of_its_session(clock: Clock) -> None:
    demux = encap_demux()
    demux.route(encap(CALLER_A, check("ufragAAAA")), RELAY_INTERNAL, clock.tick())
    demux.route(encap(CALLER_A_MOVED, check("ufragAAAA")), RELAY_INTERNAL, clock.tick())
    assert [r.address for r in demux.remotes("a")] == [CALLER_A, CALLER_A_MOVED]
    assert reply_of(demux.route_reply("a", CALLER_A_MOVED)).header == proxy_protocol.encode(
        CALLER_A_MOVED, PUBLIC
    )


def test_encap_replies_follow_the_relay_a_client_last_came_through(clock: Clock) -> None:
    # Two relay instances (or a restarted one on a new port), one client.
    other_relay = ("10.0.0.2", 3479)
    demux = encap_demux(Trust.of(["10.0.0.1", "10.0.0.2"]))
    demux.route(encap(CALLER_A, check("ufragAAAA")), RELAY_INTERNAL, clock.tick())
    assert reply_of(demux.route_reply("a", CALLER_A)).destination == RELAY_INTERNAL
    demux.route(encap(CALLER_A, RTP), other_relay, clock.tick())
    assert reply_of(demux.route_reply("a", CALLER_A)).destination == other_relay


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        (("10.0.0.9", 3479), encap(CALLER_A, check("ufragAAAA")), "untrusted_relay"),
        (("10.0.0.1", 3480), encap(CALLER_A, check("ufragAAAA")), "untrusted_relay"),
        (RELAY_INTERNAL, check("ufragAAAA"), "no_header"),
        (RELAY_INTERNAL, RTP, "no_header"),
        (RELAY_INTERNAL, proxy_protocol.encode(CALLER_A, PUBLIC)[:20], "bad_header"),
        (RELAY_INTERNAL, proxy_protocol.encode_local() + RTP, "not_proxied"),
    ],
    ids=["other_host", "other_port", "bare_check", "bare_rtp", "truncated", "local"],
)
def test_encap_refuses_headers_from_strangers_and_datagrams_without_one(
    clock: Clock, source: tuple[str, int], data: bytes, reason: str
) -> None:
    demux = encap_demux()
    assert demux.route(data, source, clock.tick()) == Drop(reason)
    assert demux.counters.drops[reason] == 1 and demux.counters.delivered == 0
    assert demux.remotes("a") == []


def test_encap_trusts_nobody_by_default(clock: Clock) -> None:
    demux: Demux[str] = Demux(DemuxConfig(encap=True))
    demux.register("ufragAAAA", "a")
    assert demux.route(encap(CALLER_A, check("ufragAAAA")), RELAY_INTERNAL, 0.0) == Drop(
        "untrusted_relay"
    )


def test_nat_never_reads_a_header(clock: Clock) -> None:
    # A datagram that happens to start with a PROXY header is just bytes in nat mode.
    demux = nat_demux()
    assert demux.route(encap(CALLER_A, check("ufragAAAA")), RELAY_UP_1, 0.0) == Drop(
        "unknown_source"
    )


def test_counters_can_be_shared_by_several_demultiplexers(clock: Clock) -> None:
    counters = DemuxCounters()
    first: Demux[str] = Demux(DemuxConfig(), counters)
    second: Demux[str] = Demux(DemuxConfig(), counters)
    first.route(DTLS, CALLER_A, 0.0)
    second.route(DTLS, CALLER_B, 0.0)
    assert counters.drops["unknown_source"] == 2


def test_trust_entries() -> None:
    trust = Trust.of(["10.0.0.1", ("10.0.0.2", 3479), "::1"])
    assert trust.allows(("10.0.0.1", 1)) and trust.allows(("10.0.0.2", 3479))
    assert not trust.allows(("10.0.0.2", 3478)) and trust.allows(("::1", 9))
    assert not Trust() and trust
    with pytest.raises(ValueError):
        Trust.of(["relay.example"])
