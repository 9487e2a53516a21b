"""The emulator's STUN record and what it says about a client's keepalives."""

from __future__ import annotations

import os
from typing import Any

from lab.netem.stunwatch import StunWatch
from lab.scenarios.evidence import keepalives
from wire import stun

CALLER = ("127.0.0.1", 40000)
OLD, NEW = ("127.0.0.1", 50000), ("127.0.0.1", 50001)


def message(kind: stun.MessageClass, *, nominate: bool = False) -> bytes:
    attributes: list[tuple[int, Any]] = [(stun.Attr.USERNAME, "server:client")]
    if nominate:
        attributes.append((stun.Attr.USE_CANDIDATE, None))
    return stun.build(stun.Method.BINDING, kind, os.urandom(12), attributes, fingerprint=True)


def test_the_watch_records_stun_only_with_its_kind_and_nomination() -> None:
    watch = StunWatch(limit=3)
    assert watch.observe(1.0, "up", CALLER, OLD, b"\x80\x6f" + bytes(10)) is None  # RTP
    seen = watch.observe(1.0, "up", CALLER, OLD, message(stun.MessageClass.REQUEST, nominate=True))
    assert seen is not None and seen.kind == "request" and seen.use_candidate
    watch.observe(2.0, "down", CALLER, OLD, message(stun.MessageClass.SUCCESS))
    watch.observe(3.0, "up", CALLER, NEW, message(stun.MessageClass.INDICATION))
    watch.observe(4.0, "up", CALLER, NEW, message(stun.MessageClass.REQUEST))  # past the limit
    assert watch.observe(5.0, "up", CALLER, NEW, b"\x00\x01\x00\x08" + bytes(8)) is None
    record = watch.to_json()
    assert record["callers"]["127.0.0.1:40000"] == [
        [1.0, "up", "request", 1, True, "127.0.0.1:50000"],
        [2.0, "down", "success", 1, False, "127.0.0.1:50000"],
        [3.0, "up", "indication", 1, False, "127.0.0.1:50001"],
    ]
    assert (record["dropped"], record["malformed"]) == (1, 1)


def caller_record(requests: list[float], indications: list[float], answers: list[float]) -> list:
    entries = [[t, "up", "request", 1, t < 0.5, "x"] for t in requests]
    entries += [[t, "up", "indication", 1, False, "x"] for t in indications]
    entries += [[t, "up", "success", 1, False, "x"] for t in answers]
    return sorted(entries)


def run(*callers: list) -> dict[str, Any]:
    return {
        "steps": [{"action": "rebind", "done_at_s": 20.0}],
        "stun": {"callers": {f"127.0.0.1:{i}": entries for i, entries in enumerate(callers)}},
    }


def test_keepalives_read_intervals_nomination_and_what_came_after_the_move() -> None:
    # A consent checker: the setup burst, then a request every 5 s; after the move at
    # 20 s its next request comes 3 s later and it answers the server again.
    checker = caller_record([0.0, 0.1, 0.2, 5.0, 10.0, 15.0, 23.0], [], [0.15, 24.0])
    # A client that only keeps alive with Binding indications after its setup burst.
    quiet = caller_record([0.0, 0.1], [15.0, 30.0], [0.12])
    # One that began after the move: its keepalives count, but it was not moved.
    late = caller_record([21.0, 21.1, 26.0], [], [21.05])
    seen = keepalives([run(checker), run(quiet, late)])
    assert seen is not None and seen.callers == 3
    # Over the whole call once set up; setup's nominating checks excluded.
    assert seen.requests == 4 + 1 and seen.nominating == 0
    assert seen.request_intervals_s == (5.0, 5.0, 8.0)
    assert seen.indications == 2 and seen.indication_intervals_s == (15.0,)
    assert seen.first_request_after_s == (3.0, None)
    assert seen.answered_after == 1
    assert seen.observed_s == 28.0
    assert keepalives([{"steps": [], "stun": None}]) is None
