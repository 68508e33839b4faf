"""The coordinator with real node processes: reports, announcements, SIGKILL and restart, discovery."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.client import CoordinatorClient
from swarm.checkpoint.manifest import Manifest, read_folder
from swarm.dht.records import pinned_run_id
from swarm.peer_names import peer_from_name
from tests.processes import kill_groups, start_logged
from tests.swarm.conftest import Swarm, make_identity

pytestmark = pytest.mark.swarm

NAME = "coordinated"
COMMON = ["--run-id", NAME, "--join-grace", "20", "--eval-every", "3", "--num-shards", "8", "--local-steps", "2",
          "--min-group", "2", "--checkpoint-every", "3", "--metrics-port", "0"]  # fmt: skip


class CoordinatorProcess:
    """``swarm-coordinator serve`` in its own process group, on a SQLite file that outlives it."""

    def __init__(
        self, workdir: Path, run: str, *, grpc_port: int = 0, http_port: int = 0, extra: tuple[str, ...] = ()
    ):
        self.workdir = workdir
        self.status_file = workdir / "coordinator.status.json"
        self.status_file.unlink(missing_ok=True)
        self.log = workdir / "coordinator.log"
        self.process = start_logged(
            [sys.executable, "-m", "coordinator", "serve", "--db", str(workdir / "coordinator.db"),
             "--host", "127.0.0.1", "--grpc-port", str(grpc_port), "--http-port", str(http_port),
             "--status-file", str(self.status_file), "--run", run, *extra],
            self.log, append=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.status_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the coordinator did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        ports = json.loads(self.status_file.read_text())
        self.grpc_port, self.http_port = ports["grpc_port"], ports["http_port"]
        self.address = f"127.0.0.1:{self.grpc_port}"

    def kill(self) -> None:
        kill_groups([self.process])


@dataclass
class Creator:
    """The key of the node that starts the run, made before anything starts, and the run's pinned id:
    the coordinator must be told which run it serves."""

    key: Path
    run: str


@pytest.fixture
def creator(tmp_path: Path) -> Creator:
    key = tmp_path / "creator.key"
    return Creator(key=key, run=pinned_run_id(NAME, peer_from_name(make_identity(key))))


@pytest.fixture
def coordinator(tmp_path: Path, creator: Creator) -> Iterator[CoordinatorProcess]:
    started = [CoordinatorProcess(tmp_path, creator.run)]
    yield started[0]
    for c in started:
        c.kill()


def poll(what: str, check, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_nodes_report_and_a_killed_coordinator_loses_nothing_acknowledged(
    swarm: Swarm, coordinator: CoordinatorProcess, creator: Creator, tmp_path: Path
) -> None:
    a = swarm.start("a", *COMMON, "--coordinator", coordinator.address, identity=creator.key)
    swarm.start("b", "--peer", swarm.first_maddr(a), *COMMON, "--coordinator", coordinator.address)
    run = swarm.run_id(a)
    client = CoordinatorClient(coordinator.address)
    try:
        # Both nodes report rounds and announce the checkpoint of round 3 (the same manifest).
        def two_providers():
            try:
                listed = client.checkpoints(run)
                reported = client.run_info(run).round
            except Exception:
                return None
            return listed if listed and len(listed[-1].providers) == 2 and reported >= 3 else None

        checkpoints = poll("a checkpoint announced by both members, and round 3 reported", two_providers, 240)
        peers = {p.peer_id: p for p in client.peers(run)}
        assert len(peers) == 2 and all(p.rounds >= 1 and p.samples > 0 for p in peers.values())
        assert all(p.metrics_url.startswith("127.0.0.1:") for p in peers.values())
        info = client.run_info(run)
        assert info.members_online == 2 and info.round >= 3 and info.compression_ratio >= 0.99
        acknowledged = {p.peer_id: p.rounds for p in client.peers(run)}
        known = {c.manifest_hash for c in checkpoints}

        coordinator.kill()
        round_at_kill = a.status()["round"]
        a.wait_for(
            lambda s: s["round"] >= round_at_kill + 3, timeout_s=240, what="rounds without a coordinator"
        )

        restarted = CoordinatorProcess(tmp_path, run, grpc_port=coordinator.grpc_port)
        try:
            after = {p.peer_id: p.rounds for p in client.peers(run)}
            assert all(after[peer] >= rounds for peer, rounds in acknowledged.items()), (acknowledged, after)
            assert known <= {c.manifest_hash for c in client.checkpoints(run, limit=100)}
            # The nodes deliver what they kept while it was down, and go on reporting.
            # (each node retries with a growing delay, at most 30 s apart)
            newest = a.status()["round"]
            poll(
                "both nodes' reports of the rounds trained while the coordinator was down",
                lambda: all(p.rounds >= newest - 1 for p in client.peers(run)),
            )
        finally:
            restarted.kill()
    finally:
        client.close()


def test_a_joiner_learns_the_coordinator_from_the_swarm(
    swarm: Swarm, coordinator: CoordinatorProcess, creator: Creator
) -> None:
    a = swarm.start("a", *COMMON, "--coordinator", coordinator.address, identity=creator.key)
    c = swarm.start("c", "--peer", swarm.first_maddr(a), *COMMON)  # no --coordinator
    run = swarm.run_id(a)
    with CoordinatorClient(coordinator.address) as client:

        def both():
            try:
                return len(client.peers(run)) == 2
            except Exception:
                return False

        poll("the joiner's reports", both, 240)
        assert "the run's creator names coordinator" in c.log.read_text()
        sd = f"http://127.0.0.1:{coordinator.http_port}/sd"
        with urllib.request.urlopen(sd, timeout=10) as answer:
            assert len(json.loads(answer.read())[0]["targets"]) == 2
        # Both leave: at once, neither counts as online nor is a Prometheus target (before, both
        # did for the coordinator's online window, a minute).
        for node in (a, c):
            node.process.send_signal(signal.SIGTERM)
        for node in (a, c):
            assert node.wait_exit(60) == 0, node.log_tail()
        assert client.run_info(run).members_online == 0
        with urllib.request.urlopen(sd, timeout=10) as answer:
            assert json.loads(answer.read()) == []


def test_the_archive_keeps_a_verified_copy_of_announced_checkpoints(
    swarm: Swarm, creator: Creator, tmp_path: Path
) -> None:
    # The node starts first, reporting to a coordinator that is not up yet (its reports wait).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = swarm.start("a", *COMMON, "--coordinator", f"127.0.0.1:{port}", identity=creator.key)
    run = swarm.run_id(a)
    assert run == creator.run
    maddr = swarm.first_maddr(a)
    archive = tmp_path / "archive"
    coordinator = CoordinatorProcess(
        tmp_path,
        run,
        grpc_port=port,
        extra=(
            "--archive",
            str(archive),
            "--peer",
            maddr,
            "--archive-keep",
            "2",
            "--archive-listen",
            "/ip4/127.0.0.1/tcp/0",
        ),
    )
    try:
        swarm.start("b", "--peer", maddr, *COMMON, "--coordinator", coordinator.address)
        with CoordinatorClient(coordinator.address) as client:

            def archived():
                try:
                    return [c for c in client.checkpoints(run, limit=100) if c.archived]
                except Exception:
                    return None

            done = poll("an archived checkpoint", archived, 300)
            latest = client.checkpoint(run, manifest_hash=done[0].manifest_hash)
        manifest = Manifest.from_bytes(latest.manifest, expected_hash=done[0].manifest_hash)
        folder = archive / run / manifest.hash
        assert len(read_folder(folder, manifest)) == len(manifest.chunks()), "the archived copy is incomplete"
        assert len(done) <= 2 and len([d for d in (archive / run).iterdir() if d.is_dir()]) <= 2

        # The archive is a provider: a pull from its address alone gets an archived checkpoint...
        archive_maddr = json.loads(coordinator.status_file.read_text())["archive_maddrs"][0]
        archive_name = archive_maddr.rsplit("/p2p/", 1)[1]
        pulled = tmp_path / "pulled"
        out = subprocess.run(
            [sys.executable, "-m", "node", "pull", "--peer", archive_maddr, "--out", str(pulled), "--timeout", "30"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        pulled_manifest = {c.manifest_hash for c in done}
        assert any(read_folder(pulled, Manifest.from_bytes(
            client_manifest(coordinator.address, run, h), expected_hash=h)) for h in pulled_manifest)  # fmt: skip

        # ... and the nodes put its pointers into the DHT, where any member's status shows them.
        def listed() -> bool:
            status = subprocess.run(
                [sys.executable, "-m", "node", "status", "--peer", maddr, "--timeout", "30"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            return archive_name[-6:] in status.stdout

        poll("the archive's pointers in the swarm's DHT", listed, 180)
    finally:
        coordinator.kill()


def client_manifest(address: str, run: str, manifest_hash: str) -> bytes:
    with CoordinatorClient(address) as client:
        return client.checkpoint(run, manifest_hash=manifest_hash).manifest
