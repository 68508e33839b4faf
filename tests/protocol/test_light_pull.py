"""``swarm-node pull`` (py-libp2p, its own process) against in-process providers on p2pd hosts.

The faults of the acceptance, through the light client: a provider serving corrupt bytes, a provider
leaving mid-download, and a pull killed halfway that resumes without fetching again what it has.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from swarm.checkpoint.manifest import build_manifest
from tests.protocol.support import CHUNK, checkpoint_nodes, random_checkpoint_files, read_files, run

SIZE = 48 * 1024 * 1024  # large enough that a pull takes a while on loopback


async def _pull(peer: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "pull", "--peer", peer, "--out", str(out), "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=240)
    return process.returncode or 0, stdout.decode() + stderr.decode()


def test_light_pull_survives_a_corrupt_provider_and_one_that_leaves(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 3)
        try:
            files = random_checkpoint_files(SIZE)
            manifest = build_manifest(files, run_id="ckpt", round=9, global_step=90, chunk_size=CHUNK * 16)
            for service in services:
                service.store.add(manifest, files)
                await service.publish(manifest)
            bad = services[1].store.folder(manifest.hash) / "model.safetensors"
            bad.write_bytes(bytes(b ^ 0x5A for b in bad.read_bytes()))  # provider 1 serves garbage
            peer = (await hosts[0].visible_maddrs())[0]

            process = await _pull(peer, tmp_path / "out")
            while services[2].served_bytes < SIZE // 8 and process.returncode is None:
                await asyncio.sleep(0.05)
            assert process.returncode is None, "the pull ended before provider 2 could leave"
            await hosts[2].shutdown()  # provider 2 leaves mid-download
            code, output = await _finish(process)
            assert code == 0, output
            assert read_files(tmp_path / "out", files) == files
            assert "3 provider(s)" in output and "1 provider(s) dropped for corrupt data" in output, output
        finally:
            for host in hosts[:2]:
                await host.shutdown()

    run(go())


def test_an_interrupted_light_pull_resumes(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 1)
        try:
            files = random_checkpoint_files(SIZE)
            manifest = build_manifest(files, run_id="ckpt", round=9, global_step=90, chunk_size=CHUNK * 16)
            services[0].store.add(manifest, files)
            await services[0].publish(manifest)
            peer = (await hosts[0].visible_maddrs())[0]
            out = tmp_path / "out"
            process = await _pull(peer, out)
            while services[0].served_bytes < SIZE // 2:
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            assert not out.exists() and out.with_name("out.partial").is_dir()
            before = services[0].served_bytes
            code, output = await _finish(await _pull(peer, out))
            assert code == 0, output
            assert read_files(out, files) == files
            refetched = services[0].served_bytes - before
            assert refetched < 0.7 * SIZE, f"the resumed pull fetched {refetched} of {SIZE} bytes again"
        finally:
            await hosts[0].shutdown()

    run(go())
