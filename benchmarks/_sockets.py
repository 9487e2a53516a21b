"""UDP sockets as the kernel lists them: per-socket drops, and which process reads which socket.

/proc/net/udp lists every UDP socket of this network namespace with its
inode and a ``drops`` count (datagrams the kernel threw away at it, full
receive buffers mostly): it says WHERE a step lost its datagrams.  With
several worker processes on one port (SO_REUSEPORT) there is one socket per
worker on that port, and the inode says whose it is.

Holding a socket is not reading it: nginx's workers inherit every worker's
listening socket from the master and each reads only its own.  What a
process reads is what its epoll instances watch, which the kernel shows in
/proc/PID/fdinfo (one ``tfd: ... ino:HEX`` line per watched file).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

_WATCHED = re.compile(r"^tfd:\s*\d+\s.*\bino:([0-9a-fA-F]+)", re.MULTILINE)


@dataclass(frozen=True)
class UdpSocket:
    inode: int
    local_port: int
    remote_port: int  # 0 unless connected
    drops: int


def udp_sockets() -> list[UdpSocket]:
    """Every UDP socket of this network namespace (IPv4 and IPv6)."""
    found = []
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            found.append(
                UdpSocket(
                    inode=int(fields[9]),
                    local_port=int(fields[1].rsplit(":", 1)[1], 16),
                    remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                    drops=int(fields[-1]),
                )
            )
    return found


def drops_by_port(sockets: list[UdpSocket]) -> dict[int, int]:
    """Drops summed over the sockets bound to each local port (all workers' sockets on it)."""
    drops: dict[int, int] = {}
    for sock in sockets:
        drops[sock.local_port] = drops.get(sock.local_port, 0) + sock.drops
    return drops


def drops_by_inode(sockets: list[UdpSocket]) -> dict[int, int]:
    return {sock.inode: sock.drops for sock in sockets}


def sockets_held(pid: int) -> set[int]:
    """Inodes of the sockets in a process's file table."""
    held = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    held.add(int(target[8:-1]))
    return held


def sockets_watched(pid: int) -> set[int]:
    """Inodes of the files a process's epoll instances watch: the sockets it reads."""
    watched: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) != "anon_inode:[eventpoll]":
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                watched.update(int(ino, 16) for ino in _WATCHED.findall(info))
    return watched
