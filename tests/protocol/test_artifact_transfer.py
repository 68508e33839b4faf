"""A run's artifacts between real libp2p hosts in one process: members that hold an artifact serve
it by its manifest hash, a joiner fetches it from every provider that has it (a member without it
just fails over), keeps it, and never fetches it twice; a closed run's artifacts go only to
credential holders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.artifacts import providers_of
from swarm.auth import Gate, issue, owner_public_key
from swarm.checkpoint.artifacts import ArtifactStore, folder_manifest
from swarm.checkpoint.download import DownloadError
from swarm.checkpoint.manifest import ManifestError, build_manifest
from swarm.checkpoint.service import fetch_artifact, fetch_checkpoint
from tests.protocol.support import (
    CHECKPOINT_RUN_ID,
    CHUNK,
    MEMBERS_TTL_S,
    announce,
    checkpoint_nodes,
    random_checkpoint_files,
    read_files,
    run,
)


def _artifact(folder: Path) -> dict[str, bytes]:
    files = {
        "train-00000.npy": os.urandom(20 * CHUNK + 5),
        "eval-00000.npy": os.urandom(CHUNK),
        "index.json": b"{}",
    }
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_a_joiner_fetches_an_artifact_from_the_members_that_hold_it_once(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 4, artifacts=True)
        try:
            files = _artifact(tmp_path / "data")
            manifest = folder_manifest(tmp_path / "data", run_id="ckpt", kind="data", chunk_size=CHUNK)
            for service in services[:2]:  # the founder and a member that fetched it already
                assert service.artifacts is not None
                service.artifacts.add_folder(manifest, tmp_path / "data")
            joiner = services[3].artifacts
            assert joiner is not None
            # Providers: a member that holds nothing (it fails over), then the two that hold it.
            providers = [hosts[2].peer_id, hosts[0].peer_id, hosts[1].peer_id]
            folder = await fetch_artifact(hosts[3], providers, manifest.hash, joiner, kind="data")
            assert {name: (folder / name).read_bytes() for name in files} == files
            assert services[0].served_bytes > 0 and services[1].served_bytes > 0, "both providers served"
            served = services[0].served_bytes + services[1].served_bytes
            # Held now: asking again (a restart: a new store over the same folder) fetches nothing.
            again = ArtifactStore(joiner.root)
            assert await fetch_artifact(hosts[3], providers, manifest.hash, again, kind="data") == folder
            assert services[0].served_bytes + services[1].served_bytes == served
            # The joiner serves it in turn.
            other = ArtifactStore(tmp_path / "other")
            await fetch_artifact(hosts[2], [hosts[3].peer_id], manifest.hash, other, kind="data")
            assert services[3].served_bytes > 0
            # Asked as another kind, or over the volunteer's cap: refused before a byte is written.
            fresh = ArtifactStore(tmp_path / "fresh")
            with pytest.raises(ManifestError, match="not the run's model"):
                await fetch_artifact(hosts[2], providers[1:], manifest.hash, fresh, kind="model")
            with pytest.raises(ManifestError, match="over the cap"):
                await fetch_artifact(
                    hosts[2], providers[1:], manifest.hash, fresh, kind="data", max_bytes=CHUNK
                )
            assert not list(fresh.root.iterdir())
            with pytest.raises(DownloadError):  # nobody holds it
                await fetch_artifact(hosts[2], [hosts[2].peer_id], "ab" * 32, fresh, kind="data")
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_a_closed_runs_artifacts_go_only_to_credential_holders(tmp_path: Path) -> None:
    async def go() -> None:
        hosts, services = await checkpoint_nodes(tmp_path, 3, artifacts=True)
        try:
            owner = Ed25519PrivateKey.generate()
            founder = services[0]
            founder.gate = Gate(run_id=CHECKPOINT_RUN_ID, owner_key=owner_public_key(owner))
            files = _artifact(tmp_path / "model")
            manifest = folder_manifest(
                tmp_path / "model", run_id=CHECKPOINT_RUN_ID, kind="model", chunk_size=CHUNK
            )
            assert founder.artifacts is not None
            founder.artifacts.add_folder(manifest, tmp_path / "model")
            member, outsider = hosts[1], hosts[2]
            credential = issue(
                owner, run_id=CHECKPOINT_RUN_ID, peer_id=member.peer_id, valid_s=3600
            ).to_bytes()
            provider = [hosts[0].peer_id]

            async def fetch(host_index: int, presented: bytes) -> Path:
                store = ArtifactStore(tmp_path / f"fetched{host_index}-{len(presented)}")
                return await fetch_artifact(
                    hosts[host_index], provider, manifest.hash, store, kind="model", credential=presented
                )

            with pytest.raises(DownloadError):  # no credential: not even the manifest
                await fetch(2, b"")
            with pytest.raises(DownloadError):  # the member's credential is bound to the member's peer id
                await fetch(2, credential)
            assert founder.refused_requests == 2 and founder.served_bytes == 0
            assert outsider.peer_id != member.peer_id
            folder = await fetch(1, credential)
            assert read_files(folder, files) == files
            # Its checkpoints stay open to anyone (swarm-node pull needs no credential): only
            # the run's artifacts (model, tokenizer, data) are closed.
            ckpt = random_checkpoint_files(3 * CHUNK)
            ckpt_manifest = build_manifest(
                ckpt, run_id=CHECKPOINT_RUN_ID, round=1, global_step=1, chunk_size=CHUNK
            )
            founder.store.add(ckpt_manifest, ckpt)
            await fetch_checkpoint(outsider, provider, ckpt_manifest.hash, tmp_path / "pulled")
            assert read_files(tmp_path / "pulled", ckpt) == ckpt
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_members_reachable_only_through_a_relay_are_not_asked_for_artifacts(tmp_path: Path) -> None:
    """A relayed connection is reset after a few hundred kB: a member whose every address is a relay
    circuit fetches the run's artifacts but is never one of their providers."""

    async def go() -> None:
        hosts, _ = await checkpoint_nodes(tmp_path, 3)
        try:
            direct, relayed, joiner = hosts
            ttl_s = MEMBERS_TTL_S + 60  # replaces the heartbeats checkpoint_nodes stored (a later expiry)
            await announce(direct, CHECKPOINT_RUN_ID, addrs=("/ip4/192.0.2.1/tcp/31337",), ttl_s=ttl_s)
            circuit = f"/ip4/192.0.2.2/tcp/31337/p2p/{direct.peer_name}/p2p-circuit"
            await announce(relayed, CHECKPOINT_RUN_ID, addrs=(circuit,), ttl_s=ttl_s)
            providers = await providers_of(joiner, CHECKPOINT_RUN_ID, [])
            assert direct.peer_id in providers and relayed.peer_id not in providers
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
