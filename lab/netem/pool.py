"""Source addresses a rebind in ``address`` mode moves a mapping to.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket can bind
127.0.0.2 .. 127.0.0.254 without anyone adding those addresses: a client that
"changed networks" costs one bind.
"""

from __future__ import annotations

import ipaddress

DEFAULT_POOL = "127.0.0.2-127.0.0.254"
_MAX_ADDRESSES = 65536  # a bigger range is almost surely a typo


class AddressPool:
    """Addresses handed out round-robin, skipping the one a mapping already uses."""

    def __init__(self, addresses: list[str]) -> None:
        if not addresses:
            raise ValueError("the address pool is empty")
        self.addresses = addresses
        self._next = 0

    @classmethod
    def parse(cls, text: str) -> AddressPool:
        """``A-B`` ranges and single addresses, comma-separated: ``127.0.0.2-127.0.0.9,::1``."""
        addresses: list[str] = []
        for part in (piece.strip() for piece in text.split(",")):
            if not part:
                continue
            first_text, dash, last_text = part.partition("-")
            try:
                first = ipaddress.ip_address(first_text.strip())
                last = ipaddress.ip_address(last_text.strip()) if dash else first
            except ValueError as exc:
                raise ValueError(f"bad address in pool {part!r}: {exc}") from exc
            if first.version != last.version or int(last) < int(first):
                raise ValueError(f"bad range {part!r}: the end must not precede the start")
            if int(last) - int(first) >= _MAX_ADDRESSES:
                raise ValueError(f"range {part!r} holds more than {_MAX_ADDRESSES} addresses")
            addresses.extend(
                str(ipaddress.ip_address(value)) for value in range(int(first), int(last) + 1)
            )
        return cls(list(dict.fromkeys(addresses)))

    def take(self, avoid: str | None = None) -> str:
        """The next address other than ``avoid``; ValueError when that is all there is."""
        for _ in range(len(self.addresses)):
            address = self.addresses[self._next]
            self._next = (self._next + 1) % len(self.addresses)
            if address != avoid:
                return address
        raise ValueError(f"the address pool holds nothing but {avoid}")

    def describe(self) -> str:
        if len(self.addresses) == 1:
            return self.addresses[0]
        return f"{self.addresses[0]}..{self.addresses[-1]} ({len(self.addresses)} addresses)"
