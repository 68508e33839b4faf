"""Checkpoints a node holds on disk, by manifest hash: the last K it published or downloaded.

    <root>/<manifest hash>/manifest.json   the canonical manifest bytes
    <root>/<manifest hash>/<file>          the checkpoint's files

A checkpoint folder appears only once complete (written under a temporary name, then renamed), so
a crash never leaves a half-written checkpoint that would be served. Pure file I/O, no asyncio.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from swarm.checkpoint.manifest import Manifest, read_chunk

MANIFEST_FILE = "manifest.json"


class ManifestFolders:
    """Complete folders by manifest hash under ``root`` (what the checkpoint and artifact stores share):
    each written under a temporary name, then renamed, so a crash never leaves a half-written folder
    that would be served. Thread-safe."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._manifests: dict[str, Manifest] = {}
        for folder in self.root.iterdir():  # what an earlier run of this node left (complete ones only)
            try:
                raw = (folder / MANIFEST_FILE).read_bytes()
                manifest = Manifest.from_bytes(raw, expected_hash=folder.name)
            except (OSError, ValueError):
                continue
            if self._holds(manifest):
                self._manifests[folder.name] = manifest

    def _holds(self, manifest: Manifest) -> bool:
        """Whether a folder found at start belongs to this store."""
        return True

    def _installed(self) -> None:
        """After a folder is taken in (under the lock)."""

    def _add(self, manifest: Manifest, write: Callable[[Path], None]) -> Path:
        """Take in ``manifest``'s folder, its files written by ``write(folder)``, unless it is held."""
        with self._lock:
            if manifest.hash not in self._manifests:
                tmp = self.root / f".tmp-{manifest.hash}-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                write(tmp)
                self._install(manifest, tmp)
        return self.folder(manifest.hash)

    def download_folder(self, digest: str) -> Path:
        """Where a download of ``digest`` lands before ``adopt`` (its ``.partial`` sibling survives a
        crash, so a restarted download keeps the chunks it had)."""
        return self.root / f".download-{digest}"

    def adopt(self, manifest: Manifest, folder: Path) -> Path:
        """Take a complete folder (a verified download, or one built in place) into the store by
        renaming it; returns its folder."""
        with self._lock:
            self._install(manifest, folder)
        return self.folder(manifest.hash)

    def _install(self, manifest: Manifest, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_bytes(manifest.to_bytes())
        target = self.folder(manifest.hash)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(folder, target)
        self._manifests[manifest.hash] = manifest
        self._installed()

    def manifest(self, digest: str) -> Manifest | None:
        return self._manifests.get(digest)

    def folder(self, digest: str) -> Path:
        return self.root / digest

    def read_chunk(self, digest: str, index: int) -> bytes | None:
        manifest = self._manifests.get(digest)
        return read_chunk(self.folder(digest), manifest, index) if manifest is not None else None


class CheckpointStore(ManifestFolders):
    def __init__(self, root: Path, *, keep: int = 3):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        super().__init__(root)

    def add(self, manifest: Manifest, files: dict[str, bytes]) -> Path:
        """Write a checkpoint (idempotent) and drop the oldest beyond ``keep``; returns its folder."""

        def write(folder: Path) -> None:
            for name, data in files.items():
                (folder / name).write_bytes(data)

        return self._add(manifest, write)

    def _installed(self) -> None:
        ranked = sorted(self._manifests.values(), key=lambda m: (m.round, m.hash), reverse=True)
        for old in ranked[self.keep :]:
            del self._manifests[old.hash]
            shutil.rmtree(self.root / old.hash, ignore_errors=True)

    def manifests(self) -> list[Manifest]:
        """Held checkpoints, newest round first."""
        return sorted(self._manifests.values(), key=lambda m: m.round, reverse=True)
