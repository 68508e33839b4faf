"""``swarm-node pull`` (py-libp2p, its own process) against in-process providers on p2pd hosts.

The faults of the acceptance, through the light client: a provider serving corrupt bytes, a provider
leaving mid-download, a pull killed halfway that resumes without fetching again what it has, and
forged manifests refused before anything is written.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from swarm.checkpoint.bounds import zero_chunk_sha256
from swarm.checkpoint.manifest import build_manifest
from tests.protocol.support import (
    CHUNK,
    checkpoint_nodes,
    random_checkpoint_files,
    read_files,
    run,
    serve_manifest_only,
)
from tests.unit.test_checkpoint_manifest import forged_manifest, random_digests

SIZE = 48 * 1024 * 1024  # large enough that a pull takes a while on loopback


async def _pull(peer: str, out: Path, *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "pull", "--peer", peer, "--out", str(out), "--timeout", "20", *flags,
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


def test_a_light_pull_refuses_a_forged_manifest_before_writing_anything(tmp_path: Path) -> None:
    """The issue's 6.8 KB manifest of 100 zero chunks (1.7 GB) against the user's cap, and a
    manifest that lists one chunk twice: ``pull`` says why in one line and creates no folder."""

    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 1)
        try:
            big = 16 << 20
            a, b = random_digests(2)
            zeros = forged_manifest([zero_chunk_sha256(big)] * 100, chunk_size=big, run_id="ckpt", round=8)
            repeating = forged_manifest([a, b, a], chunk_size=CHUNK, run_id="ckpt", round=9)
            for manifest in (zeros, repeating):
                serve_manifest_only(services[0], manifest)
                assert await services[0].publish(manifest) is not None
            peer = (await hosts[0].visible_maddrs())[0]
            for manifest, flags, message in (
                (zeros, ("--max-checkpoint-gb", "1"), "over the cap of 1.00 GiB"),
                (repeating, (), "only all-zero chunks may repeat"),
            ):
                out = tmp_path / f"out-{manifest.round}"
                code, output = await _finish(await _pull(peer, out, "--step", str(manifest.round), *flags))
                assert code == 2 and message in output and "Traceback" not in output, output
                assert not out.exists() and not out.with_name(out.name + ".partial").exists()
            assert services[0].served_bytes == 0, "no chunk was asked for"
        finally:
            await hosts[0].shutdown()

    run(go())
