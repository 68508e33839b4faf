"""A node's view of the run's shards (node.data.ShardData): the members it sees split the train
shards between them, each sequence trained once per epoch, a saved position continues there, and a
joiner refuses shards that its model's tokenizer did not make (node.run_inputs)."""

from __future__ import annotations

import asyncio
import random
import string
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from node.data import ShardData, open_shards
from node.run_inputs import joiner_data
from swarm.checkpoint.artifacts import ArtifactStore
from swarm.data.assignment import DataPosition, owned_shards
from swarm.data.errors import DataError
from swarm.data.pack import PackConfig, build_shards
from swarm.data.shards import SequenceRef
from swarm.data.tokenizer import ByteTokenizer
from swarm.dht.records import RunSpec
from swarm.run_settings import RunSettings

SEQ_LEN = 8
A, B = b"\x01" * 34, b"\x02" * 34


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 6 sequences each, of random letters: no two sequences alike."""
    rng = random.Random(0)
    documents = ["".join(rng.choices(string.ascii_letters, k=40)) for _ in range(50)]
    out = tmp_path_factory.mktemp("shards") / "data"
    build_shards(
        lambda: iter(documents), ByteTokenizer(), out, PackConfig(seq_len=SEQ_LEN, sequences_per_shard=6)
    )
    return out


def spec(batch_size: int) -> RunSpec:
    settings = RunSettings(seq_len=SEQ_LEN, batch_size=batch_size, seed=7)
    return RunSpec(**asdict(settings), model_hash="m", initial_digest="", data_hash="d", software="s")


def rows(batch: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(r) for r in batch.tolist()]


def every_train_row(data: ShardData) -> list[tuple[int, ...]]:
    sizes = data.shards.index.train.sizes
    refs = [SequenceRef(s, r) for s, n in enumerate(sizes) for r in range(n)]
    return sorted(tuple(r) for r in data.shards.sequences("train", refs).tolist())


def epoch_of(data: ShardData, me: bytes, batch_size: int) -> list[tuple[int, ...]]:
    """Every row ``me`` trains in epoch 0 (a batch that ends in epoch 1 counts its epoch-0 rows only)."""
    trained: list[tuple[int, ...]] = []
    while data.position.epoch == 0:
        before = data.position
        batch = rows(data.train_batch(spec(batch_size), peer_id=me, round=0, step=0))
        if data.position.epoch == 0:
            trained += batch
        else:  # the rest of epoch 0: what was left of its shards when the batch began
            sizes = data.shards.index.train.sizes
            trained += batch[: sum(sizes[s] - before.trained.get(s, 0) for s in owned(data, me))]
    return trained


def owned(data: ShardData, me: bytes) -> tuple[int, ...]:
    sizes = data.shards.index.train.sizes
    return owned_shards(seed=7, epoch=0, num_shards=len(sizes), members=data.members, me=me)


def test_members_split_the_shards_and_train_each_sequence_once_per_epoch(folder: Path) -> None:
    a, b = open_shards(folder), open_shards(folder)
    for data in (a, b):
        data.see_members([A, B])
    sizes = a.shards.index.train.sizes
    assert len(sizes) > 4, "the fixture must give several shards to split"
    mine, theirs = epoch_of(a, A, 3), epoch_of(b, B, 3)
    assert mine and theirs, "each member owns some shards"
    assert not set(mine) & set(theirs), "two members trained the same sequence"
    assert sorted(mine + theirs) == every_train_row(a)  # each train sequence once, across the two


def test_a_member_alone_trains_every_shard(folder: Path) -> None:
    data = open_shards(folder)
    data.see_members([])  # it sees nobody else: it owns every shard
    trained = epoch_of(data, A, 3)
    assert sorted(trained) == every_train_row(data)


def test_a_saved_position_continues_where_the_member_left(folder: Path) -> None:
    first = open_shards(folder)
    first.see_members([A, B])
    first.train_batch(spec(4), peer_id=A, round=0, step=0)
    saved = first.saved_position()
    expected = rows(first.train_batch(spec(4), peer_id=A, round=0, step=0))

    restarted = open_shards(folder)
    restarted.see_members([A, B])
    restarted.restore_position(saved)
    assert DataPosition.from_json(saved.encode()).trained, "the position records what was trained"
    assert rows(restarted.train_batch(spec(4), peer_id=A, round=0, step=0)) == expected


def test_a_corrupt_saved_position_is_a_clear_error(folder: Path) -> None:
    with pytest.raises(DataError, match="malformed"):
        open_shards(folder).restore_position('{"epoch": -1}')


def test_a_joiner_refuses_shards_its_models_tokenizer_did_not_make(folder: Path, tmp_path: Path) -> None:
    """The founder's two artifacts must agree: shards of another tokenizer, or of another sequence
    length, are refused with one line before training starts."""

    class OtherTokenizer(ByteTokenizer):
        identity = "b" * 64

    async def fetch(kind: str, digest: str) -> Path:
        return folder

    def joining(tokenizer: ByteTokenizer, seq_len: int) -> object:
        settings = RunSettings(seq_len=seq_len, data=("train.jsonl",))
        run = RunSpec(
            **asdict(settings), model_hash="m", initial_digest="", data_hash="d", software="s",
            data_artifact="a" * 64,
        )  # fmt: skip
        store = ArtifactStore(tmp_path / "artifacts")
        return asyncio.run(joiner_data(run, fetch, store, tokenizer, run_id="r", max_bytes=1 << 20))

    assert isinstance(joining(ByteTokenizer(), SEQ_LEN), ShardData)
    with pytest.raises(DataError, match="tokenized by tokenizer"):
        joining(OtherTokenizer(), SEQ_LEN)
    with pytest.raises(DataError, match="sequences of 8 tokens, the run trains on 16"):
        joining(ByteTokenizer(), 16)
