"""wire.proxy_protocol: the PROXY v2 header in front of every datagram under --forward encap."""

from __future__ import annotations

from collections.abc import Iterable

from fuzz.target import DATAGRAM_DIRS, ROOT, Target
from wire import proxy_protocol


def one_input(data: bytes) -> None:
    header = proxy_protocol.parse(data)
    assert 16 <= header.length <= len(data), (header.length, len(data))
    source, destination = header.source, header.destination
    # IPv4-mapped IPv6 addresses come back as IPv4 (wire.addr.canonical), so one
    # INET6 header can name one endpoint of each family; encode() takes only one.
    if (
        source is not None
        and destination is not None
        and (":" in source[0]) == (":" in destination[0])
    ):
        # What parses re-encodes to a header that parses to the same endpoints.
        again = proxy_protocol.parse(
            proxy_protocol.encode(source, destination) + data[header.length :]
        )
        assert (again.source, again.destination) == (source, destination)


def generated() -> Iterable[bytes]:
    pairs = [(("198.51.100.7", 40000), ("203.0.113.10", 3478)), (("2001:db8::7", 1), ("::1", 2))]
    payloads = [path.read_bytes() for path in sorted((ROOT / DATAGRAM_DIRS[0]).glob("*.bin"))[:4]]
    for source, destination in pairs:
        for payload in payloads or [b""]:
            yield proxy_protocol.encode(source, destination) + payload
    yield proxy_protocol.encode_local()


TARGET = Target(
    name="proxy_header",
    about="PROXY protocol v2 header parse (--forward encap), re-encoded where it names endpoints",
    one_input=one_input,
    expected=(proxy_protocol.ProxyHeaderError,),
    generated=generated,
)
