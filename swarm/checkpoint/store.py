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
from pathlib import Path

from swarm.checkpoint.manifest import Manifest, read_chunk

MANIFEST_FILE = "manifest.json"


class CheckpointStore:
    def __init__(self, root: Path, *, keep: int = 3):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root, self.keep = root, keep
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._manifests: dict[str, Manifest] = {}
        for folder in self.root.iterdir():  # what an earlier run of this node left (complete ones only)
            try:
                raw = (folder / MANIFEST_FILE).read_bytes()
                self._manifests[folder.name] = Manifest.from_bytes(raw, expected_hash=folder.name)
            except (OSError, ValueError):
                continue

    def add(self, manifest: Manifest, files: dict[str, bytes]) -> Path:
        """Write a checkpoint (idempotent) and drop the oldest beyond ``keep``; returns its folder."""
        digest = manifest.hash
        folder = self.root / digest
        with self._lock:
            if digest not in self._manifests:
                tmp = self.root / f".tmp-{digest}-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for name, data in files.items():
                    (tmp / name).write_bytes(data)
                (tmp / MANIFEST_FILE).write_bytes(manifest.to_bytes())
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(tmp, folder)
                self._manifests[digest] = manifest
            self._prune()
        return folder

    def download_folder(self, digest: str) -> Path:
        """Where a download of ``digest`` lands before ``adopt`` (its ``.partial`` sibling survives a
        crash, so a restarted download keeps the chunks it had)."""
        return self.root / f".download-{digest}"

    def adopt(self, manifest: Manifest, folder: Path) -> Path:
        """Take a complete, verified download (``download_folder``) into the store; returns its folder."""
        digest = manifest.hash
        with self._lock:
            (folder / MANIFEST_FILE).write_bytes(manifest.to_bytes())
            target = self.root / digest
            shutil.rmtree(target, ignore_errors=True)
            os.replace(folder, target)
            self._manifests[digest] = manifest
            self._prune()
        return target

    def _prune(self) -> None:
        ranked = sorted(self._manifests.values(), key=lambda m: (m.round, m.hash), reverse=True)
        for old in ranked[self.keep :]:
            del self._manifests[old.hash]
            shutil.rmtree(self.root / old.hash, ignore_errors=True)

    def manifest(self, digest: str) -> Manifest | None:
        return self._manifests.get(digest)

    def manifests(self) -> list[Manifest]:
        """Held checkpoints, newest round first."""
        return sorted(self._manifests.values(), key=lambda m: m.round, reverse=True)

    def folder(self, digest: str) -> Path:
        return self.root / digest

    def read_chunk(self, digest: str, index: int) -> bytes | None:
        manifest = self._manifests.get(digest)
        return read_chunk(self.root / digest, manifest, index) if manifest is not None else None
