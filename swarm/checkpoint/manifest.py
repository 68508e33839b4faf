"""Checkpoint manifests: the files of a checkpoint, cut into content-addressed chunks.

A checkpoint is a folder of a few files (``model.safetensors`` with x', ``config.json``,
``swarm.json``). Each file is cut into chunks of ``chunk_size`` bytes (the last one shorter), and each
chunk is named by the sha256 of its bytes. The manifest lists the run, round and step, and every
file's chunks; it is encoded canonically (JSON, sorted keys, no spaces), so every member that holds
the same x' at the same round derives the same bytes and the same manifest hash, and all of them
serve it. Who published it, and the signature, live in the DHT pointer, never in the manifest.

The same manifests describe a run's artifacts (``swarm.checkpoint.artifacts``: the model folder and
the tokenized data a founder publishes): their ``kind`` names what they are, and a checkpoint's
kind is left out of its bytes, so a checkpoint hashes as it always did.

Pure: no torch, no asyncio, no libp2p (plain file I/O for a download's partial folder). The light
client (``swarm-node pull``) imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

MANIFEST_VERSION = 1
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FILES = 4096
"""A data artifact holds many shards; a checkpoint's files are checked apart (``swarm.checkpoint.bounds``)."""
CHECKPOINT = "checkpoint"
KINDS = frozenset({CHECKPOINT, "model", "data"})
"""What a manifest describes: a checkpoint, or one of a run's artifacts."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that does not parse, breaks a limit, or does not match its hash."""


@dataclass(frozen=True)
class Chunk:
    """One chunk: its place in the checkpoint and the sha256 (hex) of its bytes."""

    index: int
    """Position among all the checkpoint's chunks (files in manifest order, then offset)."""
    file: str
    offset: int
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    chunks: tuple[str, ...]
    """sha256 (hex) of each chunk, in order."""


@dataclass(frozen=True)
class Manifest:
    run_id: str
    round: int
    global_step: int
    chunk_size: int
    files: tuple[FileEntry, ...]
    kind: str = CHECKPOINT

    # --- encoding -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        doc = {
            "v": MANIFEST_VERSION,
            "run_id": self.run_id,
            "round": self.round,
            "global_step": self.global_step,
            "chunk_size": self.chunk_size,
            "files": [{"name": f.name, "size": f.size, "chunks": list(f.chunks)} for f in self.files],
        }
        if self.kind != CHECKPOINT:
            doc["kind"] = self.kind
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, raw: bytes, *, expected_hash: str | None = None) -> Manifest:
        """Parse and validate; with ``expected_hash``, also check the bytes are the ones asked for."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest of {len(raw)} bytes is over the limit of {MAX_MANIFEST_BYTES}")
        if expected_hash is not None and hashlib.sha256(raw).hexdigest() != expected_hash:
            raise ManifestError("manifest bytes do not match the hash they were asked for")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"manifest is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ManifestError("manifest is not a JSON object")
        if doc.get("v") != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {doc.get('v')!r} is not {MANIFEST_VERSION}")
        chunk_size = _int(doc, "chunk_size")
        if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
            raise ManifestError(f"chunk size {chunk_size} is outside [1, {MAX_CHUNK_BYTES}]")
        files_raw = doc.get("files")
        if not isinstance(files_raw, list) or not 1 <= len(files_raw) <= MAX_FILES:
            raise ManifestError(f"manifest must list 1 to {MAX_FILES} files")
        files = []
        for entry in files_raw:
            if not isinstance(entry, dict):
                raise ManifestError("a file entry is not a JSON object")
            name, size, chunks = entry.get("name"), _int(entry, "size"), entry.get("chunks")
            if not isinstance(name, str) or not _NAME.match(name):
                raise ManifestError(f"file name {name!r} is not a plain file name")
            if not isinstance(chunks, list) or not all(
                isinstance(c, str) and _HEX64.match(c) for c in chunks
            ):
                raise ManifestError(f"file {name}: chunks must be sha256 hex strings")
            if len(chunks) != -(-size // chunk_size):
                raise ManifestError(f"file {name}: {len(chunks)} chunks for {size} bytes of {chunk_size}")
            files.append(FileEntry(name=name, size=size, chunks=tuple(chunks)))
        if len({f.name for f in files}) != len(files):
            raise ManifestError("manifest names a file twice")
        run_id = doc.get("run_id")
        if not isinstance(run_id, str) or not 1 <= len(run_id) <= 128:
            raise ManifestError("manifest run_id must be a string of 1 to 128 characters")
        kind = doc.get("kind", CHECKPOINT)
        if kind not in KINDS:
            raise ManifestError(f"manifest kind {kind!r} is not one of {sorted(KINDS)}")
        manifest = cls(
            run_id=run_id,
            round=_int(doc, "round"),
            global_step=_int(doc, "global_step"),
            chunk_size=chunk_size,
            files=tuple(files),
            kind=kind,
        )
        if manifest.to_bytes() != raw:
            raise ManifestError("manifest is not in canonical form")
        return manifest

    # --- chunks -------------------------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def chunks(self) -> list[Chunk]:
        """Every chunk in order (computed once: servers and downloaders look chunks up per request)."""
        return self._chunks

    @cached_property
    def _chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        for f in self.files:
            for i, digest in enumerate(f.chunks):
                offset = i * self.chunk_size
                size = min(self.chunk_size, f.size - offset)
                out.append(Chunk(index=len(out), file=f.name, offset=offset, size=size, sha256=digest))
        return out


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"manifest field {key!r} must be a non-negative integer, got {value!r}")
    return value


def iter_chunks(data: bytes, chunk_size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), chunk_size):
        yield data[offset : offset + chunk_size]


def build_manifest(
    files: dict[str, bytes],
    *,
    run_id: str,
    round: int,
    global_step: int,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
) -> Manifest:
    """The manifest of a checkpoint given as ``{file name: bytes}`` (files in sorted name order)."""
    entries = tuple(
        FileEntry(
            name=name,
            size=len(data),
            chunks=tuple(hashlib.sha256(c).hexdigest() for c in iter_chunks(data, chunk_size)),
        )
        for name, data in sorted(files.items())
    )
    manifest = Manifest(
        run_id=run_id, round=round, global_step=global_step, chunk_size=chunk_size, files=entries
    )
    return Manifest.from_bytes(manifest.to_bytes())  # the same checks a downloader applies


def read_folder(folder: Path, manifest: Manifest) -> set[int]:
    """The indices of the chunks of ``manifest`` found in ``folder`` with the right bytes. Each chunk
    is read, hashed and dropped: a resumed download never holds the checkpoint in memory.

    Only bytes that were written count: a chunk past its file's end, or over a hole of a sparse
    file (where a download that wrote a later chunk first skipped it), is missing, even where the
    zeros a hole reads as would hash right."""
    found: set[int] = set()
    for entry in manifest.files:
        path = folder / entry.name
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            length = os.fstat(f.fileno()).st_size
            for chunk in (c for c in manifest.chunks() if c.file == entry.name):
                if chunk.offset + chunk.size > length or _has_hole(f, chunk.offset, chunk.size):
                    continue
                f.seek(chunk.offset)
                if hashlib.sha256(f.read(chunk.size)).hexdigest() == chunk.sha256:
                    found.add(chunk.index)
    return found


def _has_hole(f: BinaryIO, offset: int, size: int) -> bool:
    """Whether the bytes ``[offset, offset + size)`` of the open file ``f`` hold a hole (never
    written). False where the system cannot tell (no SEEK_HOLE): their hash decides alone."""
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_hole is None:
        return False
    try:
        return os.lseek(f.fileno(), offset, seek_hole) < offset + size
    except OSError:
        return False


def prepare_partial(folder: Path, manifest: Manifest) -> set[int]:
    """Create (or reuse) a download's partial folder; the chunks already good.

    Files are created empty and grow as chunks are written (``write_chunk``): nothing is allocated
    ahead of the bytes that arrive. A file left longer by an earlier download (of another
    manifest, or by a version that extended files to full size) is cut to this manifest's size."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        path = folder / entry.name
        path.touch()
        if path.stat().st_size > entry.size:
            os.truncate(path, entry.size)
    return read_folder(folder, manifest)


def read_chunk(folder: Path, manifest: Manifest, index: int) -> bytes | None:
    """Chunk ``index`` of ``manifest`` from the checkpoint folder ``folder``; None when the manifest
    has no such chunk or its file is gone (pruned meanwhile)."""
    chunks = manifest.chunks()
    if not 0 <= index < len(chunks):
        return None
    chunk = chunks[index]
    try:
        with open(folder / chunk.file, "rb") as f:
            f.seek(chunk.offset)
            return f.read(chunk.size)
    except FileNotFoundError:
        return None


def write_chunk(folder: Path, chunk: Chunk, data: bytes) -> None:
    """Write a verified chunk in place; its file grows to hold it (past its end, the bytes between
    stay a hole until their own chunks come)."""
    fd = os.open(folder / chunk.file, os.O_RDWR | os.O_CREAT, 0o644)
    with open(fd, "r+b") as f:
        f.seek(chunk.offset)
        f.write(data)


def replaceable(out: Path) -> bool:
    """Whether a download may replace the folder ``out``: absent, empty, or a checkpoint folder
    pulled before (its ``swarm.json`` names a run and a round). Anything else holds a user's files."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        info = json.loads((out / "swarm.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict) and isinstance(info.get("run_id"), str) and isinstance(info.get("round"), int)
    )


def finish_partial(partial: Path, out: Path) -> None:
    """A complete download's partial folder becomes ``out`` (replacing what was there)."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
