"""Run artifacts on disk: a folder's manifest read a chunk at a time, the store, and what a
downloader requires of an artifact's manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm.checkpoint.artifacts import ArtifactError, ArtifactStore, check_artifact, folder_manifest
from swarm.checkpoint.bounds import check_plausible
from swarm.checkpoint.manifest import Manifest, ManifestError, build_manifest, read_folder

CHUNK = 4096


def _folder(path: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type":"llama"}',
        "tokenizer.json": os.urandom(3 * CHUNK),  # exactly three chunks
        "model.safetensors": os.urandom(5 * CHUNK + 17),
        "empty.txt": b"",
    }
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def test_a_folder_manifest_read_a_chunk_at_a_time_equals_the_one_of_its_bytes(tmp_path: Path) -> None:
    files = _folder(tmp_path / "model")
    manifest = folder_manifest(tmp_path / "model", run_id="run.x", kind="model", chunk_size=CHUNK)
    whole = build_manifest(files, run_id="run.x", round=0, global_step=0, chunk_size=CHUNK)
    assert manifest.files == whole.files and manifest.kind == "model"
    assert Manifest.from_bytes(manifest.to_bytes(), expected_hash=manifest.hash) == manifest
    assert manifest.hash != whole.hash, "the kind is part of an artifact's identity"
    assert b'"kind"' not in whole.to_bytes(), "a checkpoint's bytes (and hash) are as before"


def test_only_flat_folders_of_plain_files_are_artifacts(tmp_path: Path) -> None:
    _folder(tmp_path / "model")
    (tmp_path / "model" / "sub").mkdir()
    with pytest.raises(ArtifactError, match="flat folder"):
        folder_manifest(tmp_path / "model", run_id="run.x", kind="model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="at least one file"):
        folder_manifest(tmp_path / "empty", run_id="run.x", kind="data")
    with pytest.raises(ArtifactError, match="kind"):
        folder_manifest(tmp_path / "empty", run_id="run.x", kind="checkpoint")


def test_the_store_keeps_artifacts_across_restarts_and_serves_their_chunks(tmp_path: Path) -> None:
    files = _folder(tmp_path / "model")
    manifest = folder_manifest(tmp_path / "model", run_id="run.x", kind="model", chunk_size=CHUNK)
    store = ArtifactStore(tmp_path / "store")
    folder = store.add_folder(manifest, tmp_path / "model")
    assert store.add_folder(manifest, tmp_path / "model") == folder  # idempotent
    assert {name: (folder / name).read_bytes() for name in files} == files
    assert len(read_folder(folder, manifest)) == len(manifest.chunks())
    chunk = manifest.chunks()[3]
    assert store.read_chunk(manifest.hash, 3) == files[chunk.file][chunk.offset : chunk.offset + chunk.size]
    assert store.read_chunk(manifest.hash, len(manifest.chunks())) is None
    (tmp_path / "store" / ".tmp-half-written").mkdir()  # a crash mid-copy leaves only this
    reopened = ArtifactStore(tmp_path / "store")
    assert [m.hash for m in reopened.manifests()] == [manifest.hash]
    reopened.remove(manifest.hash)
    assert reopened.manifest(manifest.hash) is None and not folder.exists()


def test_an_artifact_is_never_taken_for_a_checkpoint_nor_another_kind(tmp_path: Path) -> None:
    _folder(tmp_path / "model")
    manifest = folder_manifest(tmp_path / "model", run_id="run.x", kind="model", chunk_size=CHUNK)
    with pytest.raises(ManifestError, match="not a checkpoint"):
        check_plausible(manifest, param_count=None, max_bytes=1 << 40)
    with pytest.raises(ManifestError, match="not the run's data"):
        check_artifact(manifest, kind="data", max_bytes=1 << 40)
    with pytest.raises(ManifestError, match="over the cap"):
        check_artifact(manifest, kind="model", max_bytes=CHUNK)
    check_artifact(manifest, kind="model", max_bytes=1 << 40)
