"""Checkpoint publishing and transfer between real libp2p hosts in one process.

Two members hold the same checkpoint (same bytes, so the same manifest hash) and both serve it; a
third peer finds it through a member's Latest answer (signed pointers from the DHT) and downloads
it from both. Faults: a provider serving corrupt bytes, a provider that leaves mid-download, an
interrupted download that resumes without fetching again what it already has, and forged manifests
refused before anything is written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from swarm.checkpoint.bounds import zero_chunk_sha256
from swarm.checkpoint.download import DownloadError
from swarm.checkpoint.manifest import ManifestError, build_manifest
from swarm.checkpoint.service import ask_latest, fetch_checkpoint
from tests.protocol.support import (
    CHUNK,
    checkpoint_nodes,
    random_checkpoint_files,
    read_files,
    run,
    serve_manifest_only,
)
from tests.unit.test_checkpoint_manifest import forged_manifest, random_digests


def _checkpoint(size: int = 40 * CHUNK + 123):
    files = random_checkpoint_files(size)
    return files, build_manifest(files, run_id="ckpt", round=5, global_step=50, chunk_size=CHUNK)


def test_members_share_one_manifest_and_a_peer_pulls_from_both(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 3)
        try:
            files, manifest = _checkpoint()
            again = build_manifest(dict(files), run_id="ckpt", round=5, global_step=50, chunk_size=CHUNK)
            assert again.hash == manifest.hash, "the same checkpoint gives the same manifest hash"
            for service in services[:2]:
                service.store.add(manifest, files)
                assert await service.publish(manifest) is not None
            pointers = await ask_latest(hosts[2], hosts[0].peer_id, "ckpt")
            assert {p.provider for p in pointers} == {hosts[0].peer_id, hosts[1].peer_id}
            assert {p.manifest_hash for p in pointers} == {manifest.hash}
            out = tmp_path / "pulled"
            got = await fetch_checkpoint(hosts[2], [p.provider for p in pointers], manifest.hash, out)
            assert got == manifest and read_files(out, files) == files
            assert services[0].served_bytes > 0 and services[1].served_bytes > 0, "both providers served"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_corrupt_provider_is_dropped_and_its_chunks_come_from_another(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 3)
        try:
            files, manifest = _checkpoint()
            for service in services[:2]:
                service.store.add(manifest, files)
            # Provider 1's disk goes bad after it stored the checkpoint: every chunk differs.
            path = services[1].store.folder(manifest.hash) / "model.safetensors"
            path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))
            out = tmp_path / "pulled"
            await fetch_checkpoint(hosts[2], [hosts[1].peer_id, hosts[0].peer_id], manifest.hash, out)
            assert read_files(out, files) == files
            with pytest.raises(DownloadError, match="corrupt"):
                await fetch_checkpoint(hosts[2], [hosts[1].peer_id], manifest.hash, tmp_path / "only-bad")
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_provider_leaving_mid_download_and_an_interrupted_download_resuming(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 3)
        try:
            files, manifest = _checkpoint(size=120 * CHUNK)
            for service in services[:2]:
                service.store.add(manifest, files)
            out = tmp_path / "pulled"
            progress: list[int] = []
            leaving = asyncio.Event()

            def on_progress(have: int, total: int) -> None:
                progress.append(have)
                if have > total // 4:
                    leaving.set()

            async def leave() -> None:
                await leaving.wait()
                await hosts[1].shutdown()

            download = fetch_checkpoint(
                hosts[2], [hosts[1].peer_id, hosts[0].peer_id], manifest.hash, out, on_progress=on_progress,
                timeout_s=10,
            )  # fmt: skip
            await asyncio.gather(download, leave())
            assert read_files(out, files) == files

            # Interrupt a second download after some chunks, then resume it from the partial folder.
            out2 = tmp_path / "pulled2"
            half = asyncio.Event()
            task = asyncio.create_task(
                fetch_checkpoint(
                    hosts[2],
                    [hosts[0].peer_id],
                    manifest.hash,
                    out2,
                    on_progress=lambda have, total: half.set() if have >= total // 2 else None,
                )
            )
            await half.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not out2.exists() and out2.with_name("pulled2.partial").exists()
            before = services[0].served_bytes
            await fetch_checkpoint(hosts[2], [hosts[0].peer_id], manifest.hash, out2)
            refetched = services[0].served_bytes - before
            assert read_files(out2, files) == files
            assert refetched < 0.6 * manifest.total_bytes, f"resume re-fetched {refetched} bytes"
        finally:
            for host in (hosts[0], hosts[2]):
                await host.shutdown()

    run(go())


def test_an_implausible_manifest_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """What a joiner's download (``fetch_checkpoint``, with its model's parameter count and the
    user's cap) does with a forged manifest: refuses it before it creates a file."""

    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 2)
        try:
            big = 16 << 20
            a, b = random_digests(2)
            cases = [
                # ~1 TB of zero chunks: over the cap (and over any model of a million parameters)
                (forged_manifest([zero_chunk_sha256(big)] * 60_000, chunk_size=big, run_id="ckpt"),
                 {"param_count": None}, "over the cap"),
                # 1.7 GB of zero chunks, under the cap: not what the run's model can be
                (forged_manifest([zero_chunk_sha256(big)] * 100, chunk_size=big, run_id="ckpt"),
                 {"param_count": 1_000_000}, "cannot hold the run's 1000000 fp32 parameters"),
                # one chunk listed twice, served once
                (forged_manifest([a, b, a], chunk_size=CHUNK, run_id="ckpt"), {"param_count": None}, "repeats"),
            ]  # fmt: skip
            for i, (manifest, bounds, message) in enumerate(cases):
                serve_manifest_only(services[0], manifest)
                out = tmp_path / f"pulled-{i}"
                with pytest.raises(ManifestError, match=message):
                    await fetch_checkpoint(hosts[1], [hosts[0].peer_id], manifest.hash, out, **bounds)
                assert not out.exists() and not out.with_name(out.name + ".partial").exists()
            assert services[0].served_bytes == 0, "no chunk was asked for"
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
