"""Byte-level corpora held in memory: the API nodes use until they train on shards.

The shard pipeline (``swarm.data.documents``, ``pack``, ``shards``, ``assignment``) replaces this
module: it reads more formats, tokenizes with any tokenizer, and gives the same bytes to every member.

The default corpus needs no download: the Python standard library's own source files (test suites
and site-packages left out), read in sorted order. Local data may be text files (``.txt``, ``.md``,
``.py``, ...), JSONL with a ``text`` field, or Parquet with a ``text`` column, given as files or
folders. Tokens are the UTF-8 bytes themselves (vocabulary of 256).

Documents are split into train and eval by a hash of their name, so the split does not depend on
which other files are present; the content hash covers both splits and the split rule.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swarm.data.documents import DEFAULT_DATA
from swarm.data.errors import DataError

VOCAB_SIZE = 256
EVAL_EVERY_NTH = 40
"""About one document in this many goes to the held-out eval split."""
_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".text", ".csv", ".html", ".json", ".toml", ".yaml", ".yml"}
_RECORD_SUFFIXES = {".jsonl", ".parquet"}
_SEPARATOR = b"\n\x00\n"
CORPUS_FILES = ("train.bin", "eval.bin")
"""A byte corpus as a run serves it: its train and held-out bytes, as they are in memory."""


@dataclass(frozen=True)
class Corpus:
    """Token arrays (uint8, ``[n_tokens]``) of the train and eval splits."""

    train: np.ndarray
    eval: np.ndarray
    content_hash: str
    description: str
    num_documents: int


def _stdlib_documents() -> Iterator[tuple[str, bytes]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[0] in ("site-packages", "dist-packages") or any(
            part in ("test", "tests", "idle_test") for part in parts
        ):
            continue
        yield "/".join(parts), path.read_bytes()


def _file_documents(path: Path) -> Iterator[tuple[str, bytes]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise DataError(f"{path}:{line_no}: each JSONL line needs a string field 'text'")
                yield f"{path.name}:{line_no}", record["text"].encode()
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                f"{path}: reading Parquet needs pyarrow (pip install 'swarm-train[parquet]')"
            ) from None
        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise DataError(f"{path}: Parquet file has no 'text' column (columns: {table.column_names})")
        for row, text in enumerate(table.column("text").to_pylist()):
            if isinstance(text, str):
                yield f"{path.name}:{row}", text.encode()
    elif suffix in _TEXT_SUFFIXES:
        yield path.name, path.read_bytes()
    else:
        raise DataError(f"{path}: unsupported data file type {suffix!r} (text, .jsonl or .parquet)")


def _data_files(source: str) -> list[Path]:
    """The files a source names (itself, or a folder's data files in sorted order); DataError when
    there are none."""
    path = Path(source)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES | _RECORD_SUFFIXES
        )
        if not files:
            raise DataError(f"{path}: folder holds no text, .jsonl or .parquet files")
        return files
    if path.is_file():
        if path.suffix.lower() not in _TEXT_SUFFIXES | _RECORD_SUFFIXES:
            raise DataError(f"{path}: unsupported data file type {path.suffix!r} (text, .jsonl or .parquet)")
        return [path]
    raise DataError(f"{path}: no such file or folder")


def check_sources(sources: Sequence[str]) -> None:
    """Every local source exists and each of its files can be opened, without reading them: what a
    node checks before it starts anything. DataError names the first that cannot."""
    if list(sources) == [DEFAULT_DATA]:
        return
    for source in sources:
        for file in _data_files(source):
            try:
                file.open("rb").close()
            except OSError as e:
                raise DataError(f"{file}: cannot be read ({e.strerror})") from None


def _local_documents(sources: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    for source in sources:
        for file in _data_files(source):
            try:
                yield from _file_documents(file)
            except OSError as e:
                raise DataError(f"{file}: cannot be read ({e.strerror})") from None


def _is_eval(name: str) -> bool:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % EVAL_EVERY_NTH == 0


def load_corpus(sources: Sequence[str] = (DEFAULT_DATA,), *, max_bytes: int = 64 * 1024 * 1024) -> Corpus:
    """Read documents until ``max_bytes``, split them, and hash the result.

    ``sources`` is ``["stdlib"]`` for the embedded corpus, or local files and folders.
    """
    if list(sources) == [DEFAULT_DATA]:
        documents, description = _stdlib_documents(), DEFAULT_DATA
    else:
        documents, description = _local_documents(sources), ",".join(sorted(Path(s).name for s in sources))
    train_parts: list[bytes] = []
    eval_parts: list[bytes] = []
    total = count = 0
    for name, text in documents:
        if total >= max_bytes:
            break
        (eval_parts if _is_eval(name) else train_parts).append(text + _SEPARATOR)
        total += len(text)
        count += 1
    if not train_parts or not eval_parts:
        # Small local data sets may hash every document into one split: hold out the last one.
        parts = train_parts + eval_parts
        if len(parts) < 2:
            raise DataError(f"data source {description!r} needs at least two documents, found {len(parts)}")
        train_parts, eval_parts = parts[:-1], parts[-1:]
    train = np.frombuffer(b"".join(train_parts), dtype=np.uint8)
    evaluation = np.frombuffer(b"".join(eval_parts), dtype=np.uint8)
    return Corpus(
        train=train,
        eval=evaluation,
        content_hash=_content_hash(train, evaluation),
        description=description,
        num_documents=count,
    )


def _content_hash(train: np.ndarray, evaluation: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"byte-v1 eval-every-{EVAL_EVERY_NTH}\n".encode())
    digest.update(len(train).to_bytes(8, "big"))
    digest.update(train.tobytes())
    digest.update(evaluation.tobytes())
    return digest.hexdigest()


def write_corpus(corpus: Corpus, folder: Path) -> None:
    """The corpus's bytes as files in ``folder`` (``CORPUS_FILES``): what a founder serves, so that a
    member whose own copy differs (another Python's standard library) trains on the same bytes."""
    for name, tokens in zip(CORPUS_FILES, (corpus.train, corpus.eval), strict=True):
        (folder / name).write_bytes(tokens.tobytes())


def read_corpus(folder: Path, description: str) -> Corpus:
    """The corpus ``write_corpus`` wrote in ``folder`` (fetched by its hash: the founder's bytes)."""
    try:
        train, evaluation = (np.fromfile(folder / name, dtype=np.uint8) for name in CORPUS_FILES)
    except OSError as e:
        raise DataError(f"{folder}: not a byte corpus ({e.strerror})") from None
    if not len(train) or not len(evaluation):
        raise DataError(f"{folder}: a byte corpus needs train and held-out bytes")
    return Corpus(
        train=train,
        eval=evaluation,
        content_hash=_content_hash(train, evaluation),
        description=f"{description} (the founder's copy)",
        num_documents=0,
    )
