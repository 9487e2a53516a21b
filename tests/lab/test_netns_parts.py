"""The namespace lab's pure parts: its plan, NAT rules, conntrack reading, netem mapping."""

from __future__ import annotations

import pytest

from lab.netem.core import BurstLoss, LinkConfig
from lab.netns.environment import PLAN_VARIABLE, NetnsLab, PortBlocks
from lab.netns.plan import (
    LAN_DEVICE,
    PREFIX,
    WAN_DEVICE,
    Impairment,
    Plan,
    nat_ruleset,
    next_address,
    own_nat_ruleset,
    owner_pid,
    parse_conntrack,
    setup_commands,
)
from lab.netns.select import lab_environment
from lab.netns.shaping import class_commands, class_netem, netem_args

# As `conntrack -L -p udp` (conntrack-tools 1.4.7) prints them on the router: a caller
# masqueraded to the public address, and a caller redirected into a run's emulator.
CONNTRACK = """\
udp      17 29 src=10.77.0.2 dst=198.18.0.10 sport=41234 dport=20000 src=198.18.0.10 \
dst=198.18.0.1 sport=20000 dport=61502 mark=0 use=1
udp      17 29 src=10.77.0.2 dst=198.18.0.10 sport=41234 dport=20000 src=10.77.0.1 \
dst=10.77.0.2 sport=20101 dport=41234 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.77.0.2 dst=198.18.0.10 sport=5000 dport=20002 \
src=198.18.0.10 dst=198.18.0.1 sport=20002 dport=7000 [ASSURED] mark=0 use=1
"""


def test_plan_names_are_unique_and_carry_their_owner() -> None:
    first, second = Plan.new(), Plan.new()
    assert set(first.namespaces).isdisjoint(second.namespaces)
    for name in first.namespaces:
        assert name.startswith(PREFIX) and owner_pid(name) == int(first.run_id.split("-")[0])
    assert owner_pid("someone-elses") is None
    assert Plan.from_json(first.to_json()) == first


def test_setup_never_touches_the_namespace_it_starts_from() -> None:
    plan = Plan.new()
    for argv in setup_commands(plan):
        assert argv[0] == "ip"
        # Every command names one of the lab's namespaces: created, entered, or -n.
        assert argv[1] in ("netns", "-n"), argv
        assert any(name in argv for name in plan.namespaces), argv
    links = [a for a in setup_commands(plan) if "link" in a and "add" in a]
    assert all("peer" in a and "netns" in a for a in links)


def test_router_ruleset_is_a_home_nat() -> None:
    rules = nat_ruleset("198.18.0.10", WAN_DEVICE, LAN_DEVICE)
    assert f'oifname "{WAN_DEVICE}" masquerade fully-random' in rules
    assert "policy drop" in rules and "ct state established,related accept" in rules
    assert "redirect to udp dport map @emu_udp" in rules
    own = own_nat_ruleset("172.31.77.10", "172.31.77.70", "eth0", emulator_uid=10001)
    assert "forward" not in own and "prerouting" not in own and "masquerade" in own
    # The compose caller's emulator lives beside its callers: its own packets are exempt.
    assert "meta skuid != 10001 ip daddr 172.31.77.10 meta l4proto udp redirect" in own
    assert "meta skuid != 10001 ip daddr 172.31.77.70 meta l4proto tcp redirect" in own


def test_conntrack_lines_become_mappings() -> None:
    masqueraded, redirected = parse_conntrack(CONNTRACK)  # the TCP line is not ours
    assert masqueraded.inside == ("10.77.0.2", 41234)
    assert masqueraded.public == ("198.18.0.1", 61502) and not masqueraded.redirected
    assert redirected.redirected  # answered by the emulator, not the server


def test_moved_addresses_are_never_shared() -> None:
    pool = ("198.18.0.101", "198.18.0.102")
    assert next_address(pool, []) == "198.18.0.101"
    assert next_address(pool, ["198.18.0.101"]) == "198.18.0.102"
    with pytest.raises(ValueError, match="too many"):
        next_address(pool, list(pool))


def test_port_blocks_never_repeat() -> None:
    blocks = PortBlocks(20000)
    taken = blocks.take(5) + blocks.take(3) + blocks.take(4)
    assert len(set(taken)) == len(taken) == 12 and max(taken) < 32768


def test_netns_lab_places_each_stack_in_the_server_namespace() -> None:
    plan = Plan.new(Impairment.NONE)
    lab = NetnsLab(plan)
    first = lab.stack_config(False, {"media_servers": 2, "rebind": "verified"})
    second = lab.stack_config(False, {"media_servers": 1})
    assert first.launcher == ("ip", "netns", "exec", plan.namespace("server"))
    assert first.host == plan.server_address and not first.netem
    assert first.rebind == "verified" and len(first.media_ports) == 2
    ports = [first.relay_port, first.signaling_port, *first.media_ports]
    ports += [second.relay_port, second.signaling_port, *second.media_ports]
    assert len(set(ports)) == len(ports)
    assert lab.caller_host == plan.caller_address


def test_lab_selection_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lab_environment("loopback").name == "loopback"
    monkeypatch.delenv(PLAN_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match="rtclab lab --netns"):
        lab_environment("netns")
    monkeypatch.setenv(PLAN_VARIABLE, Plan.new().to_json())
    assert lab_environment("netns").name == "netns"
    with pytest.raises(ValueError, match="no lab"):
        lab_environment("cloud")


def test_netem_follows_the_emulators_fields() -> None:
    assert netem_args(LinkConfig()) == ["delay", "0ms"]
    assert netem_args(LinkConfig(blackhole=True, delay_ms=50)) == ["loss", "100%"]
    assert netem_args(LinkConfig(delay_ms=40, jitter_ms=5, loss=0.05)) == [
        "delay",
        "40ms",
        "5ms",
        "loss",
        "random",
        "5.0000%",
    ]
    burst = LinkConfig(burst=BurstLoss(p=0.01, r=0.25))
    assert netem_args(burst) == ["loss", "gemodel", "1.0000%", "25.0000%", "100.0000%", "0.0000%"]
    # 200 ms of queue at 64 kbit/s is 1600 bytes: 8 packets of 200 bytes.
    assert netem_args(LinkConfig(rate_kbps=64)) == ["rate", "64kbit", "limit", "8"]


def test_each_run_gets_its_own_class() -> None:
    matches = [["ip", "dport", "20000", "0xffff"], ["ip", "dport", "20002", "0xffff"]]
    commands = class_commands("ns", "wan0", 2, matches)
    assert commands[0][:4] == ["ip", "netns", "exec", "ns"]
    assert sum("filter" in c for c in commands) == 2
    assert all("1:2" in c for c in commands if "filter" in c)
    change = class_netem("ns", "wan0", 2, LinkConfig(delay_ms=100))
    assert change[-4:] == ["2:", "netem", "delay", "100ms"]
    with pytest.raises(ValueError):
        class_commands(None, "wan0", 1, matches)  # 1:1 is everyone else's class
