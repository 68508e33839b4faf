"""Token shards on disk: the packed data set a run trains on, as the swarm serves it.

A shard folder is flat: ``index.json`` and one ``.npy`` file per shard (``train-00000.npy``, ...,
``eval-00000.npy``, ...). A shard is a ``[sequences, seq_len + 1]`` array of token ids, little-endian
``uint16`` when every id fits (a vocabulary of at most 65,536) and ``uint32`` otherwise; its header
is written here byte for byte (NumPy's format 1.0), so the same tokens give the same file whatever
NumPy or Python wrote it. ``index.json`` is canonical JSON (sorted keys, no spaces, integers and
strings only) naming the tokenizer, the sequence length, each split's shards with their sequence
counts and sha256, and a content hash over all of it.

The folder comes from a stranger (a run's founder, through the swarm), so reading validates it: the
index's schema, bounds and content hash, every shard's exact header, size and sha256 (when first
opened), and every id read against the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from swarm.data.errors import DataError

FORMAT = "swarm-shards/1"
INDEX_NAME = "index.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Every file name in a shard folder: what a content-addressed artifact may hold."""
MAX_INDEX_BYTES = 32 * 1024 * 1024
MAX_SHARDS = 1_000_000
MAX_SEQ_LEN = 1 << 20
MAX_VOCAB = 1 << 32
_READ_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DESCR = {"uint16": "<u2", "uint32": "<u4"}

Split = Literal["train", "eval"]


class SequenceRef(NamedTuple):
    """One sequence of a split: row ``row`` of its shard number ``shard``."""

    shard: int
    row: int


def dtype_for(vocab_size: int) -> str:
    """The shard dtype for a vocabulary: ``uint16`` when every id fits, else ``uint32``."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def npy_header(dtype: str, shape: tuple[int, int]) -> bytes:
    """The exact ``.npy`` (format 1.0) header of a little-endian C-order array: padded with spaces
    to a multiple of 64 bytes and ended by a newline, as NumPy writes it."""
    text = f"{{'descr': '{_DESCR[dtype]}', 'fortran_order': False, 'shape': ({shape[0]}, {shape[1]}), }}"
    padding = -(10 + len(text) + 1) % 64
    body = (text + " " * padding + "\n").encode("ascii")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


@dataclass(frozen=True)
class ShardFile:
    """One shard file of a split."""

    name: str
    sequences: int
    sha256: str


@dataclass(frozen=True)
class SplitIndex:
    """One split (train or eval): its shards in order and what went into them."""

    shards: tuple[ShardFile, ...]
    documents: int
    tokens: int
    """Document tokens plus one end-of-text token per document (before the last sequence wraps)."""

    @property
    def sizes(self) -> list[int]:
        """Sequences per shard, in shard order."""
        return [s.sequences for s in self.shards]

    @property
    def sequences(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True, kw_only=True)
class ShardIndex:
    """What ``index.json`` says about a shard folder."""

    tokenizer: str
    """``TextTokenizer.identity`` of the tokenizer that made the ids."""
    vocab_size: int
    eos_id: int | None
    seq_len: int
    """Each sequence holds ``seq_len + 1`` tokens: inputs ``[:-1]``, targets ``[1:]``."""
    dtype: str
    held_out_every: int
    """The held-out rule: see ``swarm.data.pack``."""
    max_eval_sequences: int | None
    train: SplitIndex
    eval: SplitIndex
    content_hash: str = ""
    """sha256 of the canonical index without this field; set by ``sealed``."""

    def _body(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("content_hash")
        body["format"] = FORMAT
        return body

    def sealed(self) -> ShardIndex:
        """This index with its content hash set."""
        return replace(self, content_hash=hashlib.sha256(_canonical(self._body())).hexdigest())

    def to_json(self) -> bytes:
        """The canonical bytes of ``index.json``."""
        return _canonical({**self._body(), "content_hash": self.content_hash}) + b"\n"

    def split(self, split: Split) -> SplitIndex:
        return self.train if split == "train" else self.eval

    @classmethod
    def from_json(cls, data: bytes) -> ShardIndex:
        """Parse and validate untrusted ``index.json`` bytes; DataError says what is wrong."""
        if len(data) > MAX_INDEX_BYTES:
            raise DataError(f"{INDEX_NAME}: {len(data)} bytes, more than an index can be")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raise DataError(f"{INDEX_NAME}: not valid JSON") from None
        return _parse_index(raw)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _int(raw: dict[str, Any], key: str, low: int, high: int) -> int:
    value = raw.get(key)
    if type(value) is not int or not low <= value <= high:
        raise DataError(f"{INDEX_NAME}: {key!r} must be an integer in [{low}, {high}]")
    return value


def _str(raw: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DataError(f"{INDEX_NAME}: {key!r} is missing or malformed")
    return value


def _parse_split(raw: object, name: str, names: set[str]) -> SplitIndex:
    if not isinstance(raw, dict) or set(raw) != {"shards", "documents", "tokens"}:
        raise DataError(f"{INDEX_NAME}: split {name!r} is not {{shards, documents, tokens}}")
    if not isinstance(raw["shards"], list) or not raw["shards"]:
        raise DataError(f"{INDEX_NAME}: split {name!r} lists no shards")
    if len(raw["shards"]) > MAX_SHARDS:
        raise DataError(f"{INDEX_NAME}: split {name!r} lists more than {MAX_SHARDS} shards")
    shards = []
    for entry in raw["shards"]:
        if not isinstance(entry, dict) or set(entry) != {"name", "sequences", "sha256"}:
            raise DataError(f"{INDEX_NAME}: a shard of {name!r} is not {{name, sequences, sha256}}")
        shard = ShardFile(
            name=_str(entry, "name", NAME_PATTERN),
            sequences=_int(entry, "sequences", 1, 1 << 40),
            sha256=_str(entry, "sha256", _HEX64),
        )
        if shard.name == INDEX_NAME or shard.name in names:
            raise DataError(f"{INDEX_NAME}: shard name {shard.name!r} is used twice")
        names.add(shard.name)
        shards.append(shard)
    return SplitIndex(
        shards=tuple(shards),
        documents=_int(raw, "documents", 1, 1 << 62),
        tokens=_int(raw, "tokens", 1, 1 << 62),
    )


def _parse_index(raw: object) -> ShardIndex:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{INDEX_NAME}: not a {FORMAT} index")
    vocab_size = _int(raw, "vocab_size", 1, MAX_VOCAB)
    eos = raw.get("eos_id")
    if eos is not None and (type(eos) is not int or not 0 <= eos < vocab_size):
        raise DataError(f"{INDEX_NAME}: 'eos_id' must be null or an id below the vocabulary size")
    dtype = raw.get("dtype")
    if dtype != dtype_for(vocab_size):
        raise DataError(f"{INDEX_NAME}: 'dtype' must be {dtype_for(vocab_size)} for {vocab_size} ids")
    names: set[str] = set()
    index = ShardIndex(
        tokenizer=_str(raw, "tokenizer", re.compile(r"[0-9a-f]{16,128}")),
        vocab_size=vocab_size,
        eos_id=eos,
        seq_len=_int(raw, "seq_len", 1, MAX_SEQ_LEN),
        dtype=dtype,
        held_out_every=_int(raw, "held_out_every", 1, 1 << 32),
        max_eval_sequences=None
        if raw.get("max_eval_sequences") is None
        else _int(raw, "max_eval_sequences", 1, 1 << 40),
        train=_parse_split(raw.get("train"), "train", names),
        eval=_parse_split(raw.get("eval"), "eval", names),
    ).sealed()
    if set(raw) != set(index._body()) | {"content_hash"} or raw.get("content_hash") != index.content_hash:
        raise DataError(f"{INDEX_NAME}: its content hash does not match what it says")
    return index


def write_shard(folder: Path, name: str, tokens: np.ndarray, dtype: str) -> ShardFile:
    """Write ``tokens`` (``[sequences, seq_len + 1]``) as the shard ``folder/name``; its index entry."""
    data = npy_header(dtype, (tokens.shape[0], tokens.shape[1])) + tokens.astype(_DESCR[dtype]).tobytes()
    (folder / name).write_bytes(data)
    return ShardFile(name=name, sequences=tokens.shape[0], sha256=hashlib.sha256(data).hexdigest())


class ShardSet:
    """A shard folder opened for reading: the validated index, and shards mapped as they are needed.

    A member may hold only the shards it trains on: a shard is read (and verified) the first time a
    batch needs it, and ``missing`` says which of a list are not there yet.
    """

    def __init__(self, folder: Path, index: ShardIndex) -> None:
        self.folder = folder
        self.index = index
        self._open: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, folder: str | Path) -> ShardSet:
        """Read and validate ``folder/index.json``; DataError when it is absent or invalid."""
        folder = Path(folder)
        try:
            with (folder / INDEX_NAME).open("rb") as f:
                data = f.read(MAX_INDEX_BYTES + 1)
        except OSError as e:
            raise DataError(f"{folder / INDEX_NAME}: cannot be read ({e.strerror or e})") from None
        try:
            return cls(folder, ShardIndex.from_json(data))
        except DataError as e:
            raise DataError(f"{folder}: {e}") from None

    def missing(self, split: Split, shards: Iterable[int]) -> list[str]:
        """The names of those of ``split``'s shards (by number) that are not in the folder."""
        files = self.index.split(split).shards
        return [files[i].name for i in shards if not (self.folder / files[i].name).is_file()]

    def _shard(self, entry: ShardFile) -> np.ndarray:
        if entry.name in self._open:
            return self._open[entry.name]
        path = self.folder / entry.name
        header = npy_header(self.index.dtype, (entry.sequences, self.index.seq_len + 1))
        size = (
            len(header)
            + entry.sequences * (self.index.seq_len + 1) * np.dtype(_DESCR[self.index.dtype]).itemsize
        )
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                if f.read(len(header)) != header:
                    raise DataError(f"{path}: not the shard its index describes (header)")
                digest.update(header)
                while chunk := f.read(_READ_BYTES):
                    digest.update(chunk)
                if f.tell() != size:
                    raise DataError(f"{path}: {f.tell()} bytes, its index says {size}")
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
        if digest.hexdigest() != entry.sha256:
            raise DataError(f"{path}: its sha256 does not match the index")
        array = np.memmap(
            path, dtype=_DESCR[self.index.dtype], mode="r", offset=len(header),
            shape=(entry.sequences, self.index.seq_len + 1),
        )  # fmt: skip
        self._open[entry.name] = array
        return array

    def sequences(self, split: Split, refs: Sequence[SequenceRef]) -> np.ndarray:
        """The sequences ``refs`` names, ``[len(refs), seq_len + 1]`` int64. DataError for a ref
        outside the split, a shard that is missing or corrupt, or an id outside the vocabulary."""
        files = self.index.split(split).shards
        out = np.empty((len(refs), self.index.seq_len + 1), dtype=np.int64)
        for i, (shard, row) in enumerate(refs):
            if not 0 <= shard < len(files) or not 0 <= row < files[shard].sequences:
                raise DataError(f"{split} sequence ({shard}, {row}) is outside the data set")
            out[i] = self._shard(files[shard])[row]
        if len(refs) and int(out.max()) >= self.index.vocab_size:
            raise DataError(f"{self.folder}: a token id is outside the vocabulary of {self.index.vocab_size}")
        return out
