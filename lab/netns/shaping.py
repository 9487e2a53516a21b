"""Impairments as kernel ``tc netem`` commands (pure: commands out, nothing run).

The scenario timelines speak the user-space emulator's impairment fields
(lab/netem/impair.py); this maps one direction's :class:`LinkConfig` onto
netem's options, and places it:

* in the namespace lab, on the router: uplink on its WAN link's egress,
  downlink on its LAN link's egress, each run in its own HTB class selected
  by u32 filters on that run's relay and signaling ports, so parallel runs
  keep their own impairments;
* in the compose caller, on its own interface: uplink on egress, downlink on
  the ingress redirected through an ifb device.

Where netem differs from the emulator (documented in docs/labs.md): jitter
reorders packets (netem queues by send time) whatever ``reorder`` says; the
rate queue is bounded in packets, so ``queue_limit_ms`` becomes a packet
count at a nominal voice packet size; Bernoulli loss and bursts combine into
one Gilbert-Elliott model.
"""

from __future__ import annotations

import math

from lab.netem.core import LinkConfig
from lab.netns.plan import in_namespace

# A voice packet (Opus 20 ms + RTP/SRTP/UDP/IP): turns the queue bound in ms into packets.
NOMINAL_PACKET_BYTES = 200
_UNLIMITED = "10gbit"  # HTB classes exist to classify, never to limit
_QUANTUM = "1514"  # one MTU per round; the default from 10gbit overflows (a kernel warning)
DEFAULT_CLASS = 1  # 1:1 carries everything no run has claimed, unimpaired


def _percent(probability: float) -> str:
    return f"{probability * 100:.4f}%"


def netem_args(config: LinkConfig) -> list[str]:
    """netem options equivalent (as far as netem goes) to one direction's impairments."""
    if config.blackhole:
        return ["loss", "100%"]
    args: list[str] = []
    if config.delay_ms or config.jitter_ms:
        args += ["delay", f"{config.delay_ms:g}ms"]
        if config.jitter_ms:
            args += [f"{config.jitter_ms:g}ms"]
    if config.burst is not None:
        # netem's 4-state Gilbert-Elliott: p, r, 1-h (loss when bad), 1-k (loss when good).
        # Bernoulli loss on top is folded into both states' loss probabilities.
        keep = 1.0 - config.loss
        args += [
            "loss",
            "gemodel",
            _percent(config.burst.p),
            _percent(config.burst.r),
            _percent(1.0 - keep * (1.0 - config.burst.loss_bad)),
            _percent(1.0 - keep * (1.0 - config.burst.loss_good)),
        ]
    elif config.loss:
        args += ["loss", "random", _percent(config.loss)]
    if config.rate_kbps is not None:
        packets = config.queue_limit_ms / 1000 * config.rate_kbps * 1000 / 8 / NOMINAL_PACKET_BYTES
        args += ["rate", f"{config.rate_kbps:g}kbit", "limit", str(max(1, math.ceil(packets)))]
    return args or ["delay", "0ms"]  # a transparent netem: the class stays in place


def root_commands(namespace: str | None, device: str) -> list[list[str]]:
    """An HTB root on ``device`` whose default class passes traffic untouched."""
    tc = in_namespace(namespace, ["tc"])
    return [
        [*tc, *f"qdisc add dev {device} root handle 1: htb default {DEFAULT_CLASS}".split()],
        [
            *tc,
            *f"class add dev {device} parent 1: classid 1:{DEFAULT_CLASS} htb".split(),
            *f"rate {_UNLIMITED} quantum {_QUANTUM}".split(),
        ],
    ]


def class_commands(
    namespace: str | None,
    device: str,
    minor: int,
    matches: list[list[str]],
) -> list[list[str]]:
    """One run's HTB class (``1:minor``), its transparent netem, and its filters.

    ``matches`` are u32 selectors, e.g. ``["ip", "dport", "20000", "0xffff"]``;
    each becomes one filter into the class.
    """
    if not DEFAULT_CLASS < minor < 0xFFFF:
        raise ValueError(f"class minor {minor} out of range")
    tc = in_namespace(namespace, ["tc"])
    classid = f"1:{minor:x}"
    commands = [
        [
            *tc,
            *f"class add dev {device} parent 1: classid {classid} htb".split(),
            *f"rate {_UNLIMITED} quantum {_QUANTUM}".split(),
        ],
        [
            *tc,
            *f"qdisc add dev {device} parent {classid} handle {minor:x}: netem delay 0ms".split(),
        ],
    ]
    for selector in matches:
        commands.append(
            [
                *tc,
                *f"filter add dev {device} parent 1: protocol ip prio 1 u32 match".split(),
                *selector,
                "flowid",
                classid,
            ]
        )
    return commands


def class_netem(namespace: str | None, device: str, minor: int, config: LinkConfig) -> list[str]:
    """Replace the netem of run class ``1:minor`` with ``config``."""
    tc = in_namespace(namespace, ["tc"])
    return [
        *tc,
        "qdisc",
        "replace",
        "dev",
        device,
        "parent",
        f"1:{minor:x}",
        "handle",
        f"{minor:x}:",
        "netem",
        *netem_args(config),
    ]


def own_interface_setup(device: str, ifb: str) -> list[list[str]]:
    """The compose caller's own link: downlink traffic turned through ``ifb`` to be shaped."""
    return [
        ["ip", "link", "add", ifb, "type", "ifb"],
        ["ip", "link", "set", ifb, "up"],
        ["tc", "qdisc", "add", "dev", device, "handle", "ffff:", "ingress"],
        f"tc filter add dev {device} parent ffff: matchall".split()
        + f"action mirred egress redirect dev {ifb}".split(),
    ]


def own_interface_netem(device: str, config: LinkConfig) -> list[str]:
    return ["tc", "qdisc", "replace", "dev", device, "root", "netem", *netem_args(config)]


def own_interface_teardown(device: str, ifb: str) -> list[list[str]]:
    return [
        ["tc", "qdisc", "del", "dev", device, "root"],
        ["tc", "qdisc", "del", "dev", device, "ingress"],
        ["ip", "link", "del", ifb],
    ]
