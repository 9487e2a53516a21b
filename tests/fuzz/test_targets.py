"""Every fuzz target, without atheris: it loads, names itself, and its seeds
(captured datagrams and offers, RFC 5769 vectors, regressions) all pass
through it raising at most the parser's own error."""

from __future__ import annotations

import pytest

from fuzz.target import load, names


def test_there_is_a_target_for_every_parser_the_brief_names() -> None:
    assert {"stun", "demux", "route_token", "relay", "sdp", "offer", "answer"} <= set(names())


@pytest.mark.parametrize("name", names())
def test_every_seed_passes_through_its_target(name: str) -> None:
    target = load(name)
    seeds = [path.read_bytes() for path in target.seed_files()] + list(target.generated())
    assert seeds, f"{name} has no seeds"
    for data in seeds:
        target.run(data)  # raises on anything but the parser's own error


@pytest.mark.parametrize("name", names())
def test_a_target_refuses_nothing_it_should_not(name: str) -> None:
    # Empty and one-byte inputs are the first things libFuzzer tries.
    target = load(name)
    for data in (b"", b"\x00", b"\xff", b"v=0\r\n"):
        target.run(data)
