"""Home routers in network namespaces: public peers on one side, NATed peers behind masquerading.

    <tag>-pub    11.88.<i>.1/24 (pub<i>) ---- (wan0) 11.88.<i>.2  <tag>-rtr<i>  192.168.<88+i>.1 (lan0) ----
    <tag>-lan<i> 192.168.<88+i>.2/24 (eth0), default route through router i

Each router forwards what its LAN starts and masquerades it behind its WAN address; from outside
it forwards only replies (conntrack ESTABLISHED) and takes no new connections itself, so nothing
can open a connection to a LAN peer, exactly as behind a home router. The public namespace has no
route into the LANs. With ``symmetric`` the routers pick a random source port per connection
(``MASQUERADE --random-fully``, as carrier-grade NATs do), which defeats hole punching: two LAN
peers can then only talk through a relay.

``reset_lan(i)`` makes the public side reset every TCP connection it holds with LAN i, as a relay
does when it restarts or cuts its circuits. Needs root, iproute2 and iptables; everything carries the tag and is
deleted on exit, on error, and by ``sweep``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.processes import create_or_close, kill_groups, start_logged, sweep_namespaces

PUBLIC_ADDRESS = "11.88.0.1"


def lan_address(index: int) -> str:
    return f"192.168.{88 + index}.2"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def missing_requirements() -> str | None:
    """Why this machine cannot build the lab, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 iptables)"
    return None


class NatLab:
    def __init__(self, lans: int = 1, *, symmetric: bool = False, tag: str = "swnat"):
        if not re.fullmatch(r"[a-z]{2,6}", tag):
            raise ValueError("tag must be 2-6 lowercase letters")
        if not 1 <= lans <= 8:
            raise ValueError("lans must be in [1, 8]")
        self.tag, self.lans, self.symmetric = tag, lans, symmetric
        self.public = f"{tag}-pub"
        self.processes: list[subprocess.Popen] = []

    def router(self, index: int) -> str:
        return f"{self.tag}-rtr{index}"

    def lan(self, index: int) -> str:
        return f"{self.tag}-lan{index}"

    def __enter__(self) -> NatLab:
        reason = missing_requirements()
        if reason is not None:
            raise PermissionError(f"the NAT lab {reason}")
        self.sweep()
        create_or_close(self._create, self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _in(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("ip", "netns", "exec", ns, *args, check=check)

    def _iptables(self, ns: str, *rule: str) -> None:
        self._in(ns, "iptables", "-w", *rule)

    def _create(self) -> None:
        _run("ip", "netns", "add", self.public)
        _run("ip", "-n", self.public, "link", "set", "lo", "up")
        self._in(self.public, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i in range(self.lans):
            router, lan = self.router(i), self.lan(i)
            for ns in (router, lan):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", f"pub{i}", "netns", self.public, "type", "veth", "peer", "name",
                 "wan0", "netns", router)  # fmt: skip
            _run("ip", "link", "add", "lan0", "netns", router, "type", "veth", "peer", "name", "eth0",
                 "netns", lan)  # fmt: skip
            for ns, dev, address in (
                (self.public, f"pub{i}", f"11.88.{i}.1/24"),
                (router, "wan0", f"11.88.{i}.2/24"),
                (router, "lan0", f"192.168.{88 + i}.1/24"),
                (lan, "eth0", f"{lan_address(i)}/24"),
            ):
                _run("ip", "-n", ns, "addr", "add", address, "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", router, "route", "add", "default", "via", f"11.88.{i}.1")
            _run("ip", "-n", lan, "route", "add", "default", "via", f"192.168.{88 + i}.1")
            self._in(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"]
            self._iptables(router, *masquerade, *(["--random-fully"] if self.symmetric else []))
            self._iptables(router, "-A", "FORWARD", "-i", "lan0", "-o", "wan0", "-j", "ACCEPT")
            self._iptables(router, "-A", "FORWARD", "-i", "wan0", "-o", "lan0", "-m", "conntrack",
                           "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")  # fmt: skip
            self._iptables(router, "-A", "FORWARD", "-i", "wan0", "-o", "lan0", "-j", "DROP")
            self._iptables(router, "-A", "INPUT", "-i", "wan0", "-m", "conntrack", "--ctstate", "NEW",
                           "-j", "DROP")  # fmt: skip

    def reset_lan(self, index: int) -> list[str]:
        """The public side resets every TCP connection it holds with LAN ``index`` (as a relay does
        when it restarts or cuts its circuits): its sockets are destroyed and the LAN peer gets a
        reset at once. New connections are not hindered. Returns the connections reset."""
        result = self._in(self.public, "ss", "-K", "-tnH", "state", "established", "dst", f"11.88.{index}.2")
        return [line.split()[-1] for line in result.stdout.splitlines() if line.strip()]

    def run(self, ns: str, command: Sequence[str], *, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start ``command`` inside namespace ``ns`` in its own process group."""
        process = start_logged(["ip", "netns", "exec", ns, *command], log, env=env)
        self.processes.append(process)
        return process

    def tcp_peers(self, ns: str) -> list[str]:
        """Remote addresses of the established TCP connections in ``ns`` ("ip:port")."""
        output = self._in(ns, "ss", "-tnH", "state", "established").stdout
        return [line.split()[-1] for line in output.splitlines() if line.strip()]

    def close(self) -> None:
        kill_groups(self.processes, timeout_s=10)
        self.sweep()

    def sweep(self) -> None:
        """Delete this lab's namespaces, killing what still runs inside them."""
        sweep_namespaces(f"{self.tag}-")
