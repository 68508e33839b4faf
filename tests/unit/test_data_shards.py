"""Reading a shard folder as a member does, which it got from a stranger: the format, every check on
the index and the shards, and the held-out batches that every node evaluates alike."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from swarm.data.batches import held_out_batches, held_out_refs, train_tensor
from swarm.data.errors import DataError
from swarm.data.pack import PackConfig, build_shards
from swarm.data.shards import INDEX_NAME, ShardFile, ShardIndex, ShardSet, SplitIndex, npy_header
from swarm.data.tokenizer import ByteTokenizer


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    documents = [f"text number {i} " * (i % 9 + 2) for i in range(500)]
    build_shards(
        lambda: iter(documents),
        ByteTokenizer(),
        tmp_path / "data",
        PackConfig(seq_len=24, sequences_per_shard=32),
    )
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("dtype", "shape"), [("uint16", (1024, 513)), ("uint32", (3, 4097)), ("uint16", (1, 2))]
)
def test_the_header_is_numpys_own(dtype: str, shape: tuple[int, int]) -> None:
    saved = io.BytesIO()
    np.save(saved, np.zeros(shape, dtype=dtype))
    header = npy_header(dtype, shape)
    assert saved.getvalue()[: len(header)] == header and len(header) % 64 == 0


def test_shards_load_with_numpy_and_batches_read_them(folder: Path) -> None:
    shards = ShardSet.open(folder)
    first = shards.index.train.shards[0]
    rows = np.load(folder / first.name)
    assert rows.shape == (first.sequences, 25) and rows.dtype == np.dtype("<u2")
    batch = train_tensor(shards, [(0, 5), (0, 0), (1, 3)])
    assert batch.dtype == torch.int64 and batch.shape == (3, 25)
    assert torch.equal(batch[0], torch.from_numpy(rows[5].astype(np.int64)))
    assert torch.equal(
        batch[2], torch.from_numpy(np.load(folder / shards.index.train.shards[1].name)[3].astype(np.int64))
    )


def test_held_out_batches_are_fixed_and_spread_over_the_split(folder: Path) -> None:
    a = held_out_batches(ShardSet.open(folder), batch_size=4, num_batches=3)
    b = held_out_batches(ShardSet.open(folder), batch_size=4, num_batches=3)
    assert len(a) == 3 and all(x.shape == (4, 25) and torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert held_out_refs([3, 2], count=4) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert held_out_refs([10], count=5) == [(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]
    assert held_out_refs([2, 1], count=7) == [(0, 0), (0, 1), (1, 0), (0, 0), (0, 1), (1, 0), (0, 0)]


def _reseal(folder: Path, **changes: object) -> None:
    """Rewrite the index as an attacker can: any content, with a content hash that matches it."""
    index = ShardIndex.from_json((folder / INDEX_NAME).read_bytes())
    (folder / INDEX_NAME).write_bytes(replace(index, **changes).sealed().to_json())  # type: ignore[arg-type]


def test_a_changed_index_is_refused(folder: Path) -> None:
    raw = (folder / INDEX_NAME).read_bytes()
    (folder / INDEX_NAME).write_bytes(raw.replace(b'"seq_len":24', b'"seq_len":25'))
    with pytest.raises(DataError, match="its content hash does not match"):
        ShardSet.open(folder)
    for garbage in (b"[1, 2", b"[" * 100_000):
        (folder / INDEX_NAME).write_bytes(garbage)
        with pytest.raises(DataError, match=r"index\.json: not valid JSON"):
            ShardSet.open(folder)
    (folder / INDEX_NAME).unlink()
    with pytest.raises(DataError, match=r"index\.json: cannot be read"):
        ShardSet.open(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq_len": 0}, r"'seq_len' must be an integer in \[1,"),
        ({"vocab_size": 70_000}, "'dtype' must be uint32 for 70000 ids"),
        ({"eos_id": 256}, "'eos_id' must be null or an id below"),
        ({"tokenizer": "not hex"}, "'tokenizer' is missing or malformed"),
    ],
)
def test_an_index_out_of_bounds_is_refused(folder: Path, changes: dict[str, object], message: str) -> None:
    _reseal(folder, **changes)
    with pytest.raises(DataError, match=message):
        ShardSet.open(folder)


@pytest.mark.parametrize("name", ["../escape.npy", ".hidden", "index.json", "a/b", "x" * 129])
def test_shard_names_stay_plain_files_of_the_folder(folder: Path, name: str) -> None:
    evil = ShardFile(name=name, sequences=1, sha256="0" * 64)
    _reseal(folder, train=SplitIndex(shards=(evil,), documents=1, tokens=1))
    with pytest.raises(DataError, match=r"'name' is missing or malformed|is used twice"):
        ShardSet.open(folder)


def test_a_changed_or_cut_shard_is_refused_when_read(folder: Path) -> None:
    shards = ShardSet.open(folder)
    path = folder / shards.index.train.shards[1].name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-00001\.npy: its sha256 does not match the index"):
        shards.sequences("train", [(1, 0)])
    path.write_bytes(bytes(data[:-2]))
    with pytest.raises(DataError, match=r"train-00001.npy: \d+ bytes, its index says \d+"):
        shards.sequences("train", [(1, 0)])
    path.write_bytes(npy_header("uint16", (31, 25)) + bytes(data[128:]))
    with pytest.raises(DataError, match="not the shard its index describes"):
        shards.sequences("train", [(1, 0)])
    assert shards.sequences("train", [(0, 0)]).shape == (1, 25)  # the others still read
    with pytest.raises(DataError, match=r"train sequence \(0, 32\) is outside the data set"):
        shards.sequences("train", [(0, 32)])


def test_ids_beyond_the_vocabulary_are_refused(folder: Path) -> None:
    _reseal(folder, vocab_size=100, eos_id=None)  # the shards hold bytes up to 'x' (120)
    with pytest.raises(DataError, match="a token id is outside the vocabulary of 100"):
        ShardSet.open(folder).sequences("train", [(0, r) for r in range(32)])


def test_a_member_may_hold_only_some_shards(folder: Path) -> None:
    shards = ShardSet.open(folder)
    names = [f.name for f in shards.index.train.shards]
    (folder / names[2]).unlink()
    assert shards.missing("train", range(len(names))) == [names[2]]
    assert shards.missing("eval", [0]) == []
    with pytest.raises(DataError, match=r"train-00002\.npy: cannot be read"):
        shards.sequences("train", [(2, 0)])
