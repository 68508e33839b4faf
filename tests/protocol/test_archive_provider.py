"""A node downloads a checkpoint from the coordinator's archive through the in-node adapter (p2pd
dialling the archive's py-libp2p host), the way a joiner does when the archive is a provider.

The archive runs in its own process (``swarm-coordinator serve --archive``): py-libp2p and hivemind
cannot share one. Its record and folder are prepared here with one archived checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from coordinator.rows import CheckpointInfo, Provider
from coordinator.store import Store
from swarm.checkpoint.manifest import build_manifest
from swarm.checkpoint.service import fetch_checkpoint
from tests.protocol.support import checkpoint_nodes, read_files, run

RUN = "ckpt.aaaaaaaaaaaaaaaa"
"""A run pinned to some creator: the coordinator serves only the runs it is told to."""
DEAD = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWS49y3XXcCHCJXBqdqdeT2ouL38JSQTC9g78pT1EQFi8K"


def test_a_node_downloads_a_checkpoint_from_the_archive(tmp_path: Path) -> None:
    files = {
        "model.safetensors": os.urandom(3 * 1024 * 1024 + 5),
        "config.json": b"{}",
        "swarm.json": b'{"format":1}',
    }
    manifest = build_manifest(files, run_id=RUN, round=7, global_step=70, chunk_size=1024 * 1024)
    archive = tmp_path / "archive"
    folder = archive / RUN / manifest.hash
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    store = Store(tmp_path / "c.db")
    info = CheckpointInfo(run_id=RUN, round=7, global_step=70, manifest_hash=manifest.hash,
                          total_bytes=manifest.total_bytes, first_announced=time.time(), archived=False)  # fmt: skip
    store.record_checkpoint(
        info, manifest.to_bytes(), Provider(peer_id="somebody", addrs=(), last_announced=0.0)
    )
    store.mark_archived(RUN, manifest.hash)
    store.close()

    status = tmp_path / "status.json"
    with open(tmp_path / "coordinator.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--db", str(tmp_path / "c.db"), "--host", "127.0.0.1",
             "--grpc-port", "0", "--http-port", "0", "--archive", str(archive), "--peer", DEAD,
             "--archive-listen", "/ip4/127.0.0.1/tcp/0", "--status-file", str(status), "--run", RUN],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not status.exists():
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "coordinator.log"
            ).read_text()
            time.sleep(0.1)
        maddr = json.loads(status.read_text())["archive_maddrs"][0]
        address, name = maddr.rsplit("/p2p/", 1)

        async def go() -> None:
            from hivemind.p2p import PeerID

            hosts, _ = await checkpoint_nodes(tmp_path, 1)
            try:
                peer = PeerID.from_base58(name).to_bytes()
                await hosts[0].connect(peer, [address])
                out = tmp_path / "downloaded"
                got = await asyncio.wait_for(fetch_checkpoint(hosts[0], [peer], manifest.hash, out), 120)
                assert got.hash == manifest.hash
                assert read_files(out, files) == files
            finally:
                await hosts[0].shutdown()

        run(go())
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
