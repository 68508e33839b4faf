"""Where p2pd listens, against where it was asked to. p2pd starts when any one of its listen
addresses works and drops the others with a line in its own log: a node asked to listen on a port
that another process holds would run without it, and nobody would know. Part of the node's
hivemind side (``swarm.p2p`` checks a daemon it started with ``unheard``).

Endpoint        the socket a listen multiaddr asks for, or one a process holds
unheard         the asked addresses no socket of the daemon serves, each with the reason
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import psutil

_FAMILIES = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}
_TRANSPORTS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


@dataclass(frozen=True)
class Endpoint:
    transport: str
    """tcp or udp (QUIC, WebTransport, ... run on udp; WebSocket on tcp)."""
    ip: IPv4Address | IPv6Address
    port: int
    """0 in an asked address: any port."""

    @classmethod
    def asked(cls, maddr: str) -> Endpoint | None:
        """The socket ``/ip4|ip6/<ip>/tcp|udp/<port>/...`` asks for; None for an address that names
        none (/dns, /unix, ...)."""
        parts = maddr.split("/")
        if len(parts) < 5 or parts[0] or parts[1] not in _FAMILIES or parts[3] not in _TRANSPORTS:
            return None
        return cls(parts[3], ip_address(parts[2]), int(parts[4]))

    def served_by(self, held: Endpoint) -> bool:
        return self.transport == held.transport and self.ip == held.ip and self.port in (0, held.port)

    def why_not_held(self) -> str:
        """Why a socket cannot listen here: binding one says (the port in use, an address this
        machine does not have)."""
        family = socket.AF_INET if self.ip.version == 4 else socket.AF_INET6
        with socket.socket(family, _TRANSPORTS[self.transport]) as probe:
            try:
                probe.bind((str(self.ip), self.port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return f"port {self.port} is in use ({self.ip}:{self.port})"
                return f"{self.ip}:{self.port}: {e.strerror}"
        return f"p2pd does not listen on {self.transport} {self.ip}:{self.port}"


def held_sockets(pid: int) -> list[Endpoint]:
    """The TCP sockets listening and the UDP sockets bound in process ``pid``."""
    held = []
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        if not conn.laddr:
            continue
        if conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN:
            held.append(Endpoint("tcp", ip_address(conn.laddr.ip), conn.laddr.port))
        elif conn.type == socket.SOCK_DGRAM:
            held.append(Endpoint("udp", ip_address(conn.laddr.ip), conn.laddr.port))
    return held


def unheard(host_maddrs: Sequence[str], pid: int) -> list[tuple[str, str]]:
    """(address, why) for each of ``host_maddrs`` that no socket of process ``pid`` serves."""
    held = held_sockets(pid)
    missing = []
    for maddr in host_maddrs:
        asked = Endpoint.asked(maddr)
        if asked is not None and not any(asked.served_by(h) for h in held):
            missing.append((maddr, asked.why_not_held()))
    return missing
