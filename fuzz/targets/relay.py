"""stun_lb.core.router: the relay's whole decision path, as a short story per input.

Each input is a list of datagrams; each frame is one byte saying who sends
(bit 0: the backend, on the flow; bits 1-2: which of four client addresses)
then a 16-bit length and the datagram.  A fresh router per input (rebind
``ssrc``, which includes ``verified``'s moves, and ``--verify-integrity``) has
one flow open from a genuine check, so frames can reach the fast path, the
rebind paths and the backend's answers, not just the slow path's refusals.
Nothing here may raise: every bad input must come out as a decision.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import replace

from fuzz.target import DATAGRAM_DIRS, ROOT, SEED_SECRET, Target
from stun_lb.core.config import RebindPolicy, RelayConfig
from stun_lb.core.events import Drop, ForwardDown, ForwardUp, Held
from stun_lb.core.router import Router
from wire import route_token, stun

CLIENTS = (("198.51.100.7", 40000), ("198.51.100.7", 40999), ("203.0.113.66", 6666), ("::1", 1))
_CONFIG = replace(
    RelayConfig(),
    backends={1: "127.0.0.1"},
    secret=SEED_SECRET,
    rebind=RebindPolicy.SSRC,
    verify_integrity=True,
    max_flows=4,
    pending_checks_per_flow=4,
    checks_per_flow=4,
)
_UFRAG = route_token.encode(SEED_SECRET, 1, 50000, nonce=1)
_PASSWORD = route_token.ice_password(SEED_SECRET, _UFRAG)
_FRAME = struct.Struct("!BH")


def check(tid: bytes) -> bytes:
    return stun.binding_request(tid, f"{_UFRAG}:cli1", _PASSWORD)


def frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + _FRAME.size <= len(data):
        who, size = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        yield who, data[pos : pos + size]
        pos += size


def frame(who: int, datagram: bytes) -> bytes:
    return _FRAME.pack(who, len(datagram)) + datagram


_OPENING = check(b"opening-tid!")


def one_input(data: bytes) -> None:
    router = Router(_CONFIG)
    decision = router.on_client_datagram(_OPENING, CLIENTS[0], 0.0)
    assert isinstance(decision, ForwardUp)
    flow_id = decision.flow_id
    now = 0.0
    for who, datagram in frames(data):
        now += 0.25
        if who & 1:
            decision = router.on_backend_datagram(flow_id, datagram, now)
        else:
            decision = router.on_client_datagram(datagram, CLIENTS[(who >> 1) & 3], now)
        assert isinstance(decision, ForwardUp | ForwardDown | Drop | Held), decision
        router.pop_events()
        router.on_timer(now)
    assert len(router.table) <= _CONFIG.max_flows


def generated() -> Iterable[bytes]:
    tid = b"a-move-check"
    success = stun.binding_success(tid, ("192.0.2.1", 1), _PASSWORD)
    # A rebind story and its replay: the paths the replay fix guards.
    yield frame(2, check(tid)) + frame(1, success) + frame(4, check(tid)) + frame(1, success)
    for directory in DATAGRAM_DIRS:
        for path in sorted((ROOT / directory).glob("*.bin"))[:20]:
            yield frame(0, path.read_bytes()) + frame(2, path.read_bytes())


TARGET = Target(
    name="relay",
    about="the relay router's decisions on client and backend datagrams (rebind, integrity)",
    one_input=one_input,
    generated=generated,
    instrument=("wire", "stun_lb.core"),
)
