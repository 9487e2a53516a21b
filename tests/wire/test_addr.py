from __future__ import annotations

import pytest

from wire.addr import canonical, format_hostport, parse_hostport


def test_canonical_unwraps_mapped_ipv4_and_drops_ipv6_extras() -> None:
    assert canonical(("::ffff:127.0.0.1", 5000, 0, 0)) == ("127.0.0.1", 5000)
    assert canonical(("::1", 5000, 0, 0)) == ("::1", 5000)
    assert canonical(("127.0.0.1", "5000")) == ("127.0.0.1", 5000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:3478", ("127.0.0.1", 3478)), ("[::1]:80", ("::1", 80)), ("host", ("host", 9))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default_port=9) == expected
    assert parse_hostport(format_hostport(expected)) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "a:99999", "[::1", "a:b"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)
