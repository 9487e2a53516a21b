"""The namespace lab's topology as data: names, addresses, commands and NAT rules.

Pure: nothing here runs a command.  :class:`Plan` says what to build; the
functions render the ``ip`` commands that build it, the nftables ruleset of
the NAT router, and read what ``conntrack -L`` prints.  host.py and nat.py
run them.

::

    caller ns                nat ns (router)                       server ns
    10.77.0.2 lan0 ──veth── lan0 10.77.0.1 | wan0 198.18.0.1 ──veth── wan0 198.18.0.10
    callers (scenario runner)  masquerade fully-random,             relay, media servers,
                               conntrack, [netem | emulator]        signaling, redis

The "internet" side uses 198.18.0.0/15, the range RFC 2544 reserves for
network benchmarks, so no address in the lab can be mistaken for a real one;
the caller's LAN is private space.  Nothing is routed out of the namespaces:
the server has no default route and the router none beyond its two links.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "rtclab-"  # every namespace this lab creates starts with it (stale cleanup keys on it)
ROLES = ("server", "nat", "caller")
LAN_DEVICE = "lan0"  # caller <-> router; names live inside our own namespaces, never the host's
WAN_DEVICE = "wan0"  # router <-> server
TABLE = "rtclab"  # the nftables table (family ip) holding every rule of the lab


class Impairment(StrEnum):
    NETEM = "netem"  # tc netem on the router's links, one class per run
    EMULATOR = "emulator"  # lab/netem on the router, traffic redirected to it per run
    NONE = "none"  # no impairment: the kernel path only; impair steps fail


@dataclass(frozen=True, slots=True)
class Plan:
    """One lab instance.  ``run_id`` makes its namespace names unique on the machine."""

    run_id: str  # "<owner pid>-<random hex>": the owner pid lets a later run spot leftovers
    impairment: Impairment = Impairment.EMULATOR
    caller_address: str = "10.77.0.2"
    nat_lan_address: str = "10.77.0.1"
    lan_prefix_len: int = 24
    nat_wan_address: str = "198.18.0.1"
    server_address: str = "198.18.0.10"
    wan_prefix_len: int = 24
    # Public addresses an ``address`` rebind moves the router to, one per move.
    moved_addresses: tuple[str, ...] = tuple(f"198.18.0.{i}" for i in range(101, 200))
    # Fixed ports for the stacks' parts and the emulators, below Linux's ephemeral
    # range (32768-60999) so no session socket of a media server can hold one.
    first_port: int = 20000

    @classmethod
    def new(cls, impairment: Impairment = Impairment.EMULATOR) -> Plan:
        return cls(run_id=f"{os.getpid()}-{secrets.token_hex(3)}", impairment=impairment)

    def namespace(self, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"no role {role!r}; roles are {ROLES}")
        return f"{PREFIX}{self.run_id}-{role}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.namespace(role) for role in ROLES)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data["impairment"] = Impairment(data["impairment"])
        data["moved_addresses"] = tuple(data["moved_addresses"])
        return cls(**data)


def in_namespace(namespace: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``namespace`` (None: where we are)."""
    return [*argv] if namespace is None else ["ip", "netns", "exec", namespace, *argv]


def setup_commands(plan: Plan) -> list[list[str]]:
    """The ``ip`` commands that build the topology, in order (namespaces first).

    Each veth pair is created directly inside the namespaces that own its ends
    (``ip -n A link add ... peer ... netns B``), so no interface ever appears in
    the namespace the lab was started from, and fixed short names cannot clash
    with anyone else's.
    """
    server, nat, caller = plan.namespaces
    lan = f"{plan.nat_lan_address}/{plan.lan_prefix_len}"
    commands = [["ip", "netns", "add", name] for name in plan.namespaces]
    commands += [["ip", "-n", name, "link", "set", "lo", "up"] for name in plan.namespaces]
    caller_cidr = f"{plan.caller_address}/{plan.lan_prefix_len}"
    wan = f"{plan.nat_wan_address}/{plan.wan_prefix_len}"
    server_cidr = f"{plan.server_address}/{plan.wan_prefix_len}"
    commands += [
        f"ip -n {caller} link add {LAN_DEVICE} type veth".split()
        + f"peer name {LAN_DEVICE} netns {nat}".split(),
        f"ip -n {nat} link add {WAN_DEVICE} type veth".split()
        + f"peer name {WAN_DEVICE} netns {server}".split(),
        f"ip -n {caller} addr add {caller_cidr} dev {LAN_DEVICE}".split(),
        f"ip -n {nat} addr add {lan} dev {LAN_DEVICE}".split(),
        f"ip -n {nat} addr add {wan} dev {WAN_DEVICE}".split(),
        f"ip -n {server} addr add {server_cidr} dev {WAN_DEVICE}".split(),
    ]
    commands += [
        ["ip", "-n", name, "link", "set", device, "up"]
        for name, device in (
            (caller, LAN_DEVICE),
            (nat, LAN_DEVICE),
            (nat, WAN_DEVICE),
            (server, WAN_DEVICE),
        )
    ]
    commands += [
        ["ip", "-n", caller, "route", "add", "default", "via", plan.nat_lan_address],
        in_namespace(nat, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
    ]
    return commands


def _postrouting(server_address: str, wan_device: str) -> list[str]:
    return [
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "{wan_device}" ip daddr {server_address} meta l4proto udp'
        " snat to udp dport map @moved fully-random",
        f'    oifname "{wan_device}" masquerade fully-random',
        "  }",
    ]


_MAPS = [
    "  map moved { type inet_service : ipv4_addr; }",
    "  map emu_udp { type inet_service : inet_service; }",
    "  map emu_tcp { type inet_service : inet_service; }",
]


def nat_ruleset(server_address: str, wan_device: str, lan_device: str) -> str:
    """The namespace lab's router: its nftables ruleset (for ``nft -f``).

    Postrouting masquerades everything leaving ``wan_device`` with a fully
    random source port, so a flushed mapping comes back on a new port (Linux
    would otherwise try to keep the old one).  The ``moved`` map sends one
    destination port's UDP out from another public address: an ``address``
    rebind adds an element.  Forwarded traffic is allowed out only from the
    LAN and back in only as replies, and nothing unsolicited reaches the
    router itself from outside -- a home NAT.  The ``emu_udp``/``emu_tcp``
    maps redirect one run's traffic (by its relay and signaling ports) to
    that run's emulator on the router (lab/netns/emulator.py).
    """
    lines = [
        f"table ip {TABLE} {{",
        *_MAPS,
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f'    iifname "{lan_device}" ip daddr {server_address} meta l4proto udp'
        " redirect to udp dport map @emu_udp",
        f'    iifname "{lan_device}" ip daddr {server_address} meta l4proto tcp'
        " redirect to tcp dport map @emu_tcp",
        "  }",
        *_postrouting(server_address, wan_device),
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        f'    iifname "{lan_device}" oifname "{wan_device}" accept',
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    iifname "{wan_device}" ct state established,related accept',
        f'    iifname "{wan_device}" drop',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def own_nat_ruleset(
    relay_address: str, signaling_address: str, device: str, emulator_uid: int
) -> str:
    """The compose caller's NAT on its own link (for ``nft -f`` in its namespace).

    The same masquerade and ``moved`` map as the router's, on what the caller
    itself sends out of ``device``.  Its emulator sits in the same namespace,
    so the redirect happens on output, for every socket but the emulator's own
    (``emulator_uid``): otherwise its upstream packets would be sent back into
    it.
    """
    lines = [
        f"table ip {TABLE} {{",
        *_MAPS,
        "  chain output {",
        # dstnat by number: nft 1.0.6 accepts the name on prerouting only
        "    type nat hook output priority -100; policy accept;",
        f"    meta skuid != {emulator_uid} ip daddr {relay_address} meta l4proto udp"
        " redirect to udp dport map @emu_udp",
        f"    meta skuid != {emulator_uid} ip daddr {signaling_address} meta l4proto tcp"
        " redirect to tcp dport map @emu_tcp",
        "  }",
        *_postrouting(relay_address, device),
        "}",
    ]
    return "\n".join(lines) + "\n"


# --- conntrack --------------------------------------------------------------------------

_FIELD = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True, slots=True)
class Mapping:
    """One UDP conntrack entry: who sent (``inside``), and as whom the far end sees it."""

    inside: tuple[str, int]  # the original source: a caller (or an emulator socket)
    server: tuple[str, int]  # the original destination
    public: tuple[str, int]  # the reply's destination: the address the server sends to
    answered_by: tuple[str, int]  # the reply's source: not the server when redirected

    @property
    def redirected(self) -> bool:
        """Sent to the server but delivered on the router (to a run's emulator)."""
        return self.answered_by != self.server


def parse_conntrack(text: str) -> list[Mapping]:
    """The UDP entries of ``conntrack -L -p udp`` output (other lines are ignored).

    A line carries the original tuple then the reply tuple, each as
    ``src= dst= sport= dport=``; the reply's destination is the public side
    of the mapping.
    """
    found = []
    for line in text.splitlines():
        if not line.startswith("udp"):
            continue
        pairs = _FIELD.findall(line)
        if len(pairs) < 8:
            continue
        orig = dict(pairs[:4])
        reply = dict(pairs[4:8])
        found.append(
            Mapping(
                inside=(orig["src"], int(orig["sport"])),
                server=(orig["dst"], int(orig["dport"])),
                public=(reply["dst"], int(reply["dport"])),
                answered_by=(reply["src"], int(reply["sport"])),
            )
        )
    return found


def conntrack_delete(server_address: str, port: int) -> list[str]:
    """Forget every UDP mapping answered by ``server_address:port`` (one run's relay).

    Matched on the reply's source, not the original destination: a caller's packets
    redirected to its run's emulator on the router were also sent to the server, and
    deleting their entry while the caller keeps sending makes the kernel resolve the
    clash with a new source port -- a second, unplanned rebind on the LAN side.
    """
    return [
        "conntrack",
        "-D",
        "-p",
        "udp",
        "--reply-src",
        server_address,
        "--reply-port-src",
        str(port),
    ]


def conntrack_list(server_address: str, port: int) -> list[str]:
    return [
        "conntrack",
        "-L",
        "-p",
        "udp",
        "--orig-dst",
        server_address,
        "--orig-port-dst",
        str(port),
    ]


# --- leftovers ----------------------------------------------------------------------------


def owner_pid(namespace: str) -> int | None:
    """The pid that created a lab namespace, from its name (None: not one of ours)."""
    if not namespace.startswith(PREFIX):
        return None
    head = namespace[len(PREFIX) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def next_address(pool: Sequence[str], used: Sequence[str]) -> str:
    """The first address of ``pool`` not in ``used``."""
    for address in pool:
        ipaddress.ip_address(address)
        if address not in used:
            return address
    raise ValueError("every address of the pool is in use: too many address rebinds")
