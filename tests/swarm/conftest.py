"""Real node processes on loopback: start them, wait for their files, and reap whole process groups.

Every node is ``python -m node join`` in its own session (process group), so SIGKILL of the group
takes its DHT process and p2pd with it; the fixture kills every group it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes import kill_groups, start_logged

pytestmark = pytest.mark.swarm


def make_identity(path: Path) -> str:
    """Write a fresh peer key (Ed25519, as nodes make them) to ``path`` and return its peer id (base58)."""
    from hivemind.p2p import PeerID

    from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf

    generate_identity(path)
    key = load_identity(path)
    assert key is not None
    return PeerID(peer_id_of(public_key_protobuf(key.public_key()))).to_base58()


@dataclass
class NodeProcess:
    name: str
    workdir: Path
    process: subprocess.Popen
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status_path(self) -> Path:
        return self.workdir / f"{self.name}.status.json"

    @property
    def summary_path(self) -> Path:
        return self.workdir / f"{self.name}.summary.json"

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, predicate, *, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll the status file until ``predicate(status)`` holds; fail with the log if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and predicate(status):
                return status
            if self.process.poll() is not None and not (status is not None and predicate(status)):
                pytest.fail(
                    f"{self.name} exited ({self.process.returncode}) before {what}:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        pytest.fail(f"{self.name}: timed out waiting for {what}:\n{self.log_tail()}")

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout_s}s:\n{self.log_tail()}")


class Swarm:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.nodes: list[NodeProcess] = []

    def start(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        identity: Path | None = None,
        home: Path | None = None,
    ) -> NodeProcess:
        """Start node ``name``: with ``home``, that data folder (node.home); else ``--ephemeral``
        (nothing kept between starts, as the tests' nodes are strangers to each other)."""
        command = [
            sys.executable,
            "-m",
            "node",
            "join",
            "--host-maddr",
            "/ip4/127.0.0.1/tcp/0",
            "--threads",
            "1",
            "--status-file",
            str(self.workdir / f"{name}.status.json"),
            "--summary-json",
            str(self.workdir / f"{name}.summary.json"),
            *args,
        ]
        if identity is not None:
            command += ["--identity", str(identity)]
        command += ["--home", str(home)] if home is not None else ["--ephemeral"]
        log = self.workdir / f"{name}.log"
        process = start_logged(command, log, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        node = NodeProcess(name, self.workdir, process, log)
        self.nodes.append(node)
        return node

    def run_id(self, node: NodeProcess) -> str:
        """The full id of the run ``node`` trains (a run's first node pins the name it was given)."""
        return node.wait_for(lambda s: bool(s.get("run_id")), timeout_s=120, what="its run id")["run_id"]

    def first_maddr(self, node: NodeProcess) -> str:
        return node.wait_for(lambda s: bool(s.get("maddrs")), timeout_s=120, what="its addresses")["maddrs"][
            0
        ]

    def reap(self) -> None:
        kill_groups(node.process for node in self.nodes)


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    s = Swarm(tmp_path)
    try:
        yield s
    finally:
        s.reap()


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (zombies of our own children excepted)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            return True
    return False
