"""Transport addresses as the processes exchange and compare them."""

from __future__ import annotations

import ipaddress
from typing import Any

Address = tuple[str, int]


def canonical(addr: Any) -> Address:
    """``(host, port)`` with IPv6 extras dropped and IPv4-mapped IPv6 unwrapped.

    asyncio hands out 4-tuples for IPv6 sockets and ``::ffff:a.b.c.d`` on
    dual-stack ones; a flow table keyed by the raw tuple would see one client
    as two.
    """
    host, port = addr[0], int(addr[1])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host, port
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), port
    return str(ip), port


def parse_hostport(text: str, default_port: int | None = None) -> Address:
    """Parse ``host:port`` (``[v6]:port`` for IPv6); raise ValueError if bad."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise ValueError(f"unclosed '[' in {text!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        return host, default_port
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


def format_hostport(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
