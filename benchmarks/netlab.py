"""A small network lab for benchmarks: one network namespace per node, a bridge, tbf-shaped links.

    with NetLab(nodes=4, rate_mbit=100) as lab:
        lab.run(0, ["python", "-m", "node", "join", ...])     # a process inside node 0's namespace
        lab.link_bytes(0)                                     # bytes node 0's link carried so far

Layout: namespace ``<tag>-hub`` holds a bridge; node i lives in ``<tag>-n<i>`` with ``eth0`` at
10.77.0.(i+1)/24, joined to the bridge by a veth pair. With ``rate_mbit`` both ends of every veth get
a ``tbf`` qdisc, so a node's upload and download are each limited to the rate (netem is not
available here, so links add no delay). Counters: ``link_bytes`` reads the hub end of the node's
veth (Ethernet frames: payload plus TCP/IP headers and ACKs); ``socket_bytes`` sums ``ss``'s per
socket payload counters (bytes_acked sent, bytes_received) over the TCP sockets in the namespace.

With ``cpu_per_node`` every node's processes share a CPU quota of that many cores (a cgroup of the
``cpu`` controller, v1 or v2): each node computes at a fixed speed, as a volunteer with its own GPU
does, instead of taking the cores that idle nodes leave on this shared machine.

Needs root and iproute2. Everything it creates carries the tag and is deleted on exit, on error,
and on SIGINT/SIGTERM; ``NetLab.sweep(tag)`` removes what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.processes
from tests.processes import create_or_close, kill_groups, start_logged, sweep_namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class NetLab:
    def __init__(
        self,
        nodes: int,
        *,
        rate_mbit: float | None = None,
        tag: str = "swb",
        node_rates_mbit: Sequence[float | None] | None = None,
        cpu_per_node: float | None = None,
    ):
        """``node_rates_mbit``, when given, sets each node's link rate (None: unlimited) instead;
        ``cpu_per_node`` caps each node's processes together at that many cores."""
        if not 1 <= nodes <= 200:
            raise ValueError("nodes must be in [1, 200]")
        if not re.fullmatch(r"[a-z]{2,6}", tag):
            raise ValueError("tag must be 2-6 lowercase letters")
        if node_rates_mbit is not None and len(node_rates_mbit) != nodes:
            raise ValueError("node_rates_mbit needs one rate per node")
        if cpu_per_node is not None and not 0.01 <= cpu_per_node <= (os.cpu_count() or 1):
            raise ValueError(f"cpu_per_node must be in [0.01, {os.cpu_count()}] cores")
        self.cpu_per_node = cpu_per_node
        self.nodes, self.rate_mbit, self.tag = nodes, rate_mbit, tag
        self.rates = list(node_rates_mbit) if node_rates_mbit is not None else [rate_mbit] * nodes
        self.hub = f"{tag}-hub"
        self.processes: list[subprocess.Popen] = []
        self._previous_handlers: dict[int, object] = {}

    # --- set-up and tear-down -----------------------------------------------------------------

    def namespace(self, index: int) -> str:
        return f"{self.tag}-n{index}"

    def address(self, index: int) -> str:
        return f"10.77.0.{index + 1}"

    def cgroup(self, index: int) -> Path:
        return _cpu_root() / self.namespace(index)

    def __enter__(self) -> NetLab:
        if os.geteuid() != 0:
            raise PermissionError("the network lab needs root (network namespaces and tc)")
        NetLab.sweep(self.tag)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        create_or_close(self._create, self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.close()
        raise KeyboardInterrupt(f"signal {signum}")

    def _create(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i in range(self.nodes):
            ns, veth = self.namespace(i), f"{self.tag}v{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "netns", self.hub, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.hub, "link", "set", veth, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            if self.cpu_per_node is not None:
                _cpu_group(self.cgroup(i), self.cpu_per_node)
            if self.rates[i] is not None:
                for where, dev in ((ns, "eth0"), (self.hub, veth)):
                    subprocess.run(
                        ["ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                         "rate", f"{self.rates[i]}mbit", "burst", "256kb", "latency", "100ms"],
                        check=True, capture_output=True,
                    )  # fmt: skip

    def close(self) -> None:
        kill_groups(self.processes, timeout_s=10)
        NetLab.sweep(self.tag)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    @staticmethod
    def sweep(tag: str) -> None:
        """Delete every namespace named ``<tag>-*`` (and with it its veth ends and qdiscs)."""
        sweep_namespaces(f"{tag}-")
        for root in CGROUP_ROOTS:
            for group in root.glob(f"{tag}-n*") if root.is_dir() else ():
                _remove_group(group)

    # --- processes and counters ---------------------------------------------------------------

    def run(
        self, index: int, command: Sequence[str], *, log: Path, env: dict | None = None
    ) -> subprocess.Popen:
        """Start ``command`` inside node ``index``'s namespace, in its own process group (and in the
        node's CPU cgroup, which its children inherit)."""
        command = ["ip", "netns", "exec", self.namespace(index), *command]
        if self.cpu_per_node is not None:  # join the cgroup first: `ip netns exec` remounts /sys
            procs = self.cgroup(index) / "cgroup.procs"
            command = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]
        process = start_logged(command, log, env=env)
        self.processes.append(process)
        return process

    def link_bytes(self, index: int) -> tuple[int, int]:
        """(sent, received) by node ``index`` on its link, Ethernet frames included."""

        def read(counter: str) -> int:
            path = f"/sys/class/net/{self.tag}v{index}/statistics/{counter}"
            result = subprocess.run(
                ["ip", "netns", "exec", self.hub, "cat", path], check=True, capture_output=True, text=True
            )
            return int(result.stdout)

        # The hub end receives what the node sends.
        return read("rx_bytes"), read("tx_bytes")

    def socket_bytes(self, index: int) -> dict[str, tuple[int, int]]:
        """Per TCP connection of node ``index``: (payload bytes acked by the peer, payload bytes received)."""
        output = subprocess.run(
            ["ip", "netns", "exec", self.namespace(index), "ss", "-tinH"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        sockets: dict[str, tuple[int, int]] = {}
        key = None
        for line in output.splitlines():
            if not line.startswith((" ", "\t")):
                parts = line.split()
                key = f"{parts[3]}>{parts[4]}" if len(parts) >= 5 else None
                continue
            if key is None:
                continue
            acked = re.search(r"bytes_acked:(\d+)", line)
            received = re.search(r"bytes_received:(\d+)", line)
            sockets[key] = (int(acked.group(1)) if acked else 0, int(received.group(1)) if received else 0)
        return sockets


CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"))
"""cgroup v1's cpu controller, else the v2 hierarchy."""


def _cpu_root() -> Path:
    if (CGROUP_ROOTS[0] / "cpu.cfs_quota_us").exists():
        return CGROUP_ROOTS[0]
    if "cpu" in (CGROUP_ROOTS[1] / "cgroup.controllers").read_text().split():
        return CGROUP_ROOTS[1]
    raise OSError("no cgroup cpu controller: cannot cap a node's CPU")


def _cpu_group(path: Path, cores: float) -> None:
    """A cgroup whose processes together get at most ``cores`` cores (over 100 ms periods)."""
    path.mkdir(exist_ok=True)
    quota = str(int(cores * 100_000))
    if (path / "cpu.cfs_quota_us").exists():
        (path / "cpu.cfs_period_us").write_text("100000")
        (path / "cpu.cfs_quota_us").write_text(quota)
    else:
        (path / "cpu.max").write_text(f"{quota} 100000")


def _remove_group(path: Path, wait_s: float = 10.0) -> None:
    """Remove a CPU cgroup once the processes killed in it have exited (it is busy until then)."""
    deadline = time.monotonic() + wait_s
    while (pids := _group_pids(path)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        path.rmdir()


def _group_pids(path: Path) -> list[str]:
    try:
        return (path / "cgroup.procs").read_text().split()
    except FileNotFoundError:  # already removed (by another sweep)
        return []


def socket_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """Payload bytes (sent, received) between two ``socket_bytes`` snapshots; new sockets count from 0."""
    sent = received = 0
    for key, (s, r) in after.items():
        s0, r0 = before.get(key, (0, 0))
        sent += s - s0
        received += r - r0
    return sent, received
