"""A run's artifacts: the folders a founder publishes so that volunteers need nothing but ``--peer``.

An artifact is a flat folder of files (the model's configuration, tokenizer and initial weights; the
tokenized training and held-out data), described by a manifest of ``kind`` "model" or "data"
(``swarm.checkpoint.manifest``): chunked and content-addressed exactly like a checkpoint, so it
travels over the checkpoint protocol from every member that holds it, each chunk verified. The run
spec names each artifact by its manifest hash, signed by the run's creator, so a joiner trusts the
bytes it fetched because they hash to what the spec names, never because of who served them; and
nothing about an artifact depends on where a file lives on the founder's disk.

- ``folder_manifest``: the manifest of a folder, each file read and hashed a chunk at a time
  (artifacts run to gigabytes: nothing is held whole in memory).
- ``ArtifactStore``: the artifacts a node holds, ``<root>/<manifest hash>/``, kept until removed (a
  restarted node fetches nothing twice); written under a temporary name and renamed, so a crash
  never leaves a half-written artifact that would be served.
- ``check_artifact``: what a downloader requires of an artifact's manifest before it writes a byte.

Pure file I/O: no asyncio, no torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from swarm.checkpoint.manifest import (
    CHECKPOINT,
    DEFAULT_CHUNK_BYTES,
    KINDS,
    FileEntry,
    Manifest,
    ManifestError,
)
from swarm.checkpoint.store import ManifestFolders

ARTIFACT_KINDS = KINDS - {CHECKPOINT}
_READ_BYTES = 1 << 20


class ArtifactError(ValueError):
    """A folder that cannot be published as an artifact (a subfolder, a file name not plain)."""


def _file_entry(path: Path, chunk_size: int) -> FileEntry:
    """The entry of one file: its size and the sha256 of each chunk, read ``_READ_BYTES`` at a time."""
    digests: list[str] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            digest, filled = hashlib.sha256(), 0
            while filled < chunk_size:
                piece = f.read(min(_READ_BYTES, chunk_size - filled))
                if not piece:
                    break
                digest.update(piece)
                filled += len(piece)
            if filled == 0:
                break
            digests.append(digest.hexdigest())
            size += filled
            if filled < chunk_size:
                break
    return FileEntry(name=path.name, size=size, chunks=tuple(digests))


def folder_manifest(
    folder: Path, *, run_id: str, kind: str, chunk_size: int = DEFAULT_CHUNK_BYTES
) -> Manifest:
    """The manifest of every file in ``folder`` (flat; names in sorted order), as artifact ``kind``."""
    if kind not in ARTIFACT_KINDS:
        raise ArtifactError(f"artifact kind {kind!r} is not one of {sorted(ARTIFACT_KINDS)}")
    entries = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            raise ArtifactError(f"{path}: an artifact is a flat folder of files; this is not a file")
        entries.append(_file_entry(path, chunk_size))
    if not entries:
        raise ArtifactError(f"{folder}: an artifact needs at least one file")
    manifest = Manifest(
        run_id=run_id, round=0, global_step=0, chunk_size=chunk_size, files=tuple(entries), kind=kind
    )
    try:
        return Manifest.from_bytes(manifest.to_bytes())  # the checks every downloader applies
    except ManifestError as e:
        raise ArtifactError(f"{folder}: {e}") from None


def check_artifact(manifest: Manifest, *, kind: str, max_bytes: int) -> None:
    """ManifestError unless ``manifest`` is an artifact of ``kind`` of at most ``max_bytes``: its hash
    is the one the creator-signed spec names (the caller asked for it by that hash), so its content
    is the founder's; the cap is the volunteer's own bound on what it downloads."""
    if manifest.kind != kind:
        raise ManifestError(f"the manifest describes a {manifest.kind}, not the run's {kind} artifact")
    if manifest.total_bytes > max_bytes:
        raise ManifestError(
            f"the run's {kind} artifact of {manifest.total_bytes / 2**30:.2f} GiB is over the cap of"
            f" {max_bytes / 2**30:.2f} GiB (--max-checkpoint-gb)"
        )


class ArtifactStore(ManifestFolders):
    """The artifacts this node holds, by manifest hash. Thread-safe."""

    def _holds(self, manifest: Manifest) -> bool:
        return manifest.kind in ARTIFACT_KINDS

    def add_folder(self, manifest: Manifest, source: Path) -> Path:
        """Copy ``source`` (whose files ``manifest`` describes) into the store, a file at a time;
        idempotent. Returns the artifact's folder."""

        def write(folder: Path) -> None:
            for entry in manifest.files:
                shutil.copyfile(source / entry.name, folder / entry.name)

        return self._add(manifest, write)

    def staging_folder(self, name: str) -> Path:
        """An empty folder inside the store where this node builds an artifact of its own (the
        founder's model and data), to ``adopt`` by renaming, never by a second copy."""
        folder = self.root / f".staging-{name}-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def remove(self, digest: str) -> None:
        with self._lock:
            self._manifests.pop(digest, None)
            shutil.rmtree(self.folder(digest), ignore_errors=True)

    def manifests(self) -> list[Manifest]:
        return list(self._manifests.values())
