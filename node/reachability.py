"""Whether other peers can dial this node: judged from its addresses and its peers' (no network I/O)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

from node.sections import NetworkConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_of(maddr: str) -> IPAddress | None:
    """The IP address of an /ip4 or /ip6 multiaddr; None for DNS names and anything unparseable."""
    parts = maddr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(parts[2])
        except ValueError:
            return None
    return None


def effective_reachability(net: NetworkConfig) -> str:
    """``net.reachability``, except that in auto mode a node that listens on private addresses only
    and joins through a peer with a public one is behind NAT: it is private from the start, so it
    reserves a relay slot at once instead of waiting for AutoNAT's verdict (minutes, or never when
    too few peers can dial back). A swarm on one LAN or on loopback stays on auto."""
    if net.reachability != "auto" or net.announce_maddrs:
        return net.reachability
    ours: list[IPAddress | None] = []
    for a in (ip_of(m) for m in net.host_maddrs):
        # 0.0.0.0 / :: listen on every interface: judge by the interfaces' addresses.
        ours += interface_addresses(a.version) if a is not None and a.is_unspecified else [a]
    theirs = [ip_of(m) for m in net.peers]
    private_here = all(a is not None and not a.is_global for a in ours)
    if private_here and any(a is not None and a.is_global for a in theirs):
        return "private"
    return "auto"


def interface_addresses(version: int) -> list[IPAddress | None]:
    """This machine's addresses of IP ``version`` (4 or 6), loopback and link-local left out."""
    import socket

    import psutil

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    found: list[IPAddress | None] = []
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family == family:
                with contextlib.suppress(ValueError):
                    ip = ipaddress.ip_address(entry.address.split("%")[0])
                    if not ip.is_loopback and not ip.is_link_local:
                        found.append(ip)
    return found


def reachability(visible: Sequence[str], announced: Sequence[str]) -> str:
    """What a user should know at start-up about whether other peers can dial this node."""
    if announced:
        return (
            f"announcing {', '.join(announced)}: peers dial this node there, so that port must be open"
            " or forwarded to this machine"
        )
    direct = [m for m in visible if "p2p-circuit" not in m]
    public = [m for m in direct if (a := ip_of(m)) is not None and a.is_global]
    if public:
        return f"public address(es) {', '.join(public)}: peers anywhere can dial this node"
    if any("p2p-circuit" in m for m in visible):
        return "reachable through a relay only (/p2p-circuit): expect slower rounds"
    return (
        "only private or loopback addresses: peers outside this network cannot dial this node (behind"
        " NAT or a firewall). Peers on the same network can. To serve the internet, forward the port"
        " and pass --announce-maddr with the public address, or pass --reachability private to be"
        " reached through a relay"
    )
