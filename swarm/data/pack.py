"""Packing: documents -> token ids -> fixed-length sequences in shard files, once, by a run's founder.

Each document is tokenized and followed by the tokenizer's end-of-text id (when it has one); the
documents of a split are concatenated in reading order and cut into sequences of ``seq_len + 1``
tokens, ``sequences_per_shard`` to a shard, written as each shard fills, so a data set larger than
memory is never held whole. The last sequence of a split is completed with the split's first tokens
(cycling them when the whole split is shorter than one sequence), so no token is dropped.

The held-out (eval) split is a rule on each document's own bytes, so it does not depend on file
names, order or which other documents are present: a document is held out when the first 8 bytes of
the sha256 of its UTF-8 text, read as a big-endian integer, are divisible by ``held_out_every`` (and,
if ``max_eval_sequences`` is set, while the held-out split holds fewer sequences than that). When no
document qualifies (a small data set), the documents with the smallest such hash are held out
instead, which takes a second pass over the documents. Identical documents always share a split.

The same documents and tokenizer give byte-identical shards and index on every machine: the bytes
are integers in a fixed layout, and the index is canonical JSON (``swarm.data.shards``).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swarm.data.errors import DataError
from swarm.data.shards import INDEX_NAME, ShardFile, ShardIndex, SplitIndex, dtype_for, write_shard
from swarm.data.tokenizer import TextTokenizer

ENCODE_BATCH_CHARS = 1 << 20
"""Documents are handed to the tokenizer in batches of about this many characters."""
ENCODE_BATCH_DOCUMENTS = 1024


@dataclass(frozen=True, kw_only=True)
class PackConfig:
    """How a founder packs its data set; recorded in the index."""

    seq_len: int
    """Tokens a model sees per sequence; each stored sequence holds ``seq_len + 1`` (inputs and targets)."""
    sequences_per_shard: int = 1024
    """Sequences per shard file (the last shard of a split may hold fewer). Shards are what members
    are assigned and fetch: with fewer train shards than members, members take turns by epoch."""
    held_out_every: int = 40
    """About one document in this many is held out for evaluation."""
    max_eval_sequences: int | None = None
    """When set, once the held-out split holds this many sequences every later document trains (the
    held-out documents then all come from the start of the data set: prefer a larger
    ``held_out_every`` to hold less out of a large data set)."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "sequences_per_shard", "held_out_every", "max_eval_sequences"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class _SplitWriter:
    """One split's token stream, cut into sequences and written shard by shard."""

    def __init__(self, folder: Path, prefix: str, *, width: int, per_shard: int, dtype: str) -> None:
        self.folder, self.prefix, self.width, self.per_shard, self.dtype = (
            folder,
            prefix,
            width,
            per_shard,
            dtype,
        )
        self.head = np.empty(0, dtype=np.int64)
        """The split's first ``width`` tokens, which complete its last sequence."""
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.files: list[ShardFile] = []
        self.documents = 0
        self.tokens = 0

    @property
    def sequences(self) -> int:
        """Complete sequences so far."""
        return sum(f.sequences for f in self.files) + self.pending_tokens // self.width

    def add(self, ids: np.ndarray) -> None:
        """Append one document's ids (end-of-text included)."""
        self.documents += 1
        self.tokens += len(ids)
        if len(self.head) < self.width:
            self.head = np.concatenate([self.head, ids[: self.width - len(self.head)]])
        self.pending.append(ids)
        self.pending_tokens += len(ids)
        shard_tokens = self.per_shard * self.width
        if self.pending_tokens >= shard_tokens:
            stream = np.concatenate(self.pending)
            while len(stream) >= shard_tokens:
                self._write(stream[:shard_tokens])
                stream = stream[shard_tokens:]
            self.pending, self.pending_tokens = [stream], len(stream)

    def _write(self, tokens: np.ndarray) -> None:
        name = f"{self.prefix}-{len(self.files):05d}.npy"
        self.files.append(write_shard(self.folder, name, tokens.reshape(-1, self.width), self.dtype))

    def finish(self) -> SplitIndex:
        """Write what is left, the last sequence completed from the split's start."""
        if self.documents:
            stream = np.concatenate(self.pending)
            short = -len(stream) % self.width
            self._write(np.concatenate([stream, np.resize(self.head, short)]))
        return SplitIndex(shards=tuple(self.files), documents=self.documents, tokens=self.tokens)


def _held_out_key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:8]


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in documents:
        batch.append(text)
        size += len(text)
        if size >= ENCODE_BATCH_CHARS or len(batch) >= ENCODE_BATCH_DOCUMENTS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dataclass
class _Packed:
    train: SplitIndex
    eval: SplitIndex
    smallest_key: bytes | None


def _pack(
    documents: Iterable[str],
    tokenizer: TextTokenizer,
    folder: Path,
    config: PackConfig,
    *,
    held_out_key: bytes | None,
    on_progress: Callable[[int, int], None] | None,
) -> _Packed:
    """One pass: every document into its split. ``held_out_key``, when given, replaces the hash rule."""
    dtype = dtype_for(tokenizer.vocab_size)
    width, eos = config.seq_len + 1, tokenizer.eos_id
    train, held_out = (
        _SplitWriter(folder, prefix, width=width, per_shard=config.sequences_per_shard, dtype=dtype)
        for prefix in ("train", "eval")
    )
    smallest: bytes | None = None
    done = tokens = 0
    for batch in _batches(documents):
        encoded = tokenizer.encode(batch)
        if len(encoded) != len(batch):
            raise DataError(f"the tokenizer returned {len(encoded)} token lists for {len(batch)} documents")
        for text, ids in zip(batch, encoded, strict=True):
            array = np.asarray(ids + ([] if eos is None else [eos]), dtype=np.int64)
            if not len(array):
                continue
            if array.min() < 0 or array.max() >= tokenizer.vocab_size:
                bad = int(array.max() if array.max() >= tokenizer.vocab_size else array.min())
                raise DataError(
                    f"the tokenizer gave id {bad}, outside its vocabulary of {tokenizer.vocab_size}"
                )
            key = _held_out_key(text)
            smallest = key if smallest is None else min(smallest, key)
            if held_out_key is not None:
                is_held_out = key == held_out_key
            else:
                is_held_out = int.from_bytes(key, "big") % config.held_out_every == 0 and (
                    config.max_eval_sequences is None or held_out.sequences < config.max_eval_sequences
                )
            (held_out if is_held_out else train).add(array)
            tokens += len(array)
        done += len(batch)
        if on_progress is not None:
            on_progress(done, tokens)
    return _Packed(train=train.finish(), eval=held_out.finish(), smallest_key=smallest)


def build_shards(
    documents: Callable[[], Iterable[str]],
    tokenizer: TextTokenizer,
    out_dir: str | Path,
    config: PackConfig,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> ShardIndex:
    """Tokenize and pack the documents into a new shard folder ``out_dir``; its index.

    ``documents`` returns a fresh iterator over the data set each call (``read_documents`` with its
    arguments bound): a small data set may be read twice (see the module docstring). The folder is
    built beside ``out_dir`` and renamed into place when complete, so ``out_dir`` either holds a
    whole shard folder or does not exist. ``on_progress(documents, tokens)`` follows the work.
    DataError when ``out_dir`` exists, when there is no document, or when there are too few to
    hold one out and train on the rest.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DataError(f"{out_dir}: already exists; shards are written into a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        packed = _pack(documents(), tokenizer, work, config, held_out_key=None, on_progress=on_progress)
        if packed.smallest_key is None:
            raise DataError("the data set is empty: no document has any tokens")
        if not packed.eval.documents:
            if packed.train.documents < 2:
                raise DataError("the data set has one document: at least two are needed, one is held out")
            shutil.rmtree(work)
            work.mkdir()
            packed = _pack(
                documents(),
                tokenizer,
                work,
                config,
                held_out_key=packed.smallest_key,
                on_progress=on_progress,
            )
        if not packed.train.documents:
            raise DataError("every document of the data set is the same text: nothing is left to train on")
        index = ShardIndex(
            tokenizer=tokenizer.identity,
            vocab_size=tokenizer.vocab_size,
            eos_id=tokenizer.eos_id,
            seq_len=config.seq_len,
            dtype=dtype_for(tokenizer.vocab_size),
            held_out_every=config.held_out_every,
            max_eval_sequences=config.max_eval_sequences,
            train=packed.train,
            eval=packed.eval,
        ).sealed()
        # What members will check: a tokenizer whose identity or ids the index cannot hold fails here.
        ShardIndex.from_json(index.to_json())
        (work / INDEX_NAME).write_bytes(index.to_json())
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return index
