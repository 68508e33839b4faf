"""What a node trains and evaluates on: the run's byte corpus read locally, or the run's data artifact.

``WindowData`` is the embedded ``stdlib`` corpus (and older runs): each member reads the corpus
itself and draws random windows of its bytes. ``ShardData`` is a run whose founder tokenized its data
set once, with the model's tokenizer, and packed it into shards (``swarm.data.pack``), published as
the run's data artifact: every member trains on the same token ids, whatever its machine, its
tokenizer library's version or its Python, and never needs the founder's files.

Both draw a member's batch as a pure function of (run seed, peer id, round, step), so a resumed
node picks up where it left, and both give every node the same held-out batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from swarm.data.batches import held_out_batches, sequence_refs, train_tensor
from swarm.data.corpus import Corpus
from swarm.data.documents import read_documents
from swarm.data.pack import PackConfig, build_shards
from swarm.data.sampling import batch_rng, eval_batches, train_batch
from swarm.data.shards import ShardSet
from swarm.data.tokenizer import TextTokenizer
from swarm.dht.records import RunSpec


class RunData(Protocol):
    @property
    def description(self) -> str: ...

    @property
    def content_hash(self) -> str:
        """What the run spec's ``data_hash`` names."""
        ...

    def train_batch(self, spec: RunSpec, *, peer_id: bytes, round: int, step: int) -> torch.Tensor:
        """``[batch_size, seq_len + 1]`` int64: what ``peer_id`` trains at ``step`` of ``round``."""
        ...

    def eval_batches(self, spec: RunSpec, num_batches: int) -> list[torch.Tensor]: ...


@dataclass
class WindowData:
    """A byte corpus each member reads itself: random windows of its train bytes."""

    corpus: Corpus

    @property
    def description(self) -> str:
        return self.corpus.description

    @property
    def content_hash(self) -> str:
        return self.corpus.content_hash

    def train_batch(self, spec: RunSpec, *, peer_id: bytes, round: int, step: int) -> torch.Tensor:
        return train_batch(
            self.corpus.train, seq_len=spec.seq_len, batch_size=spec.batch_size, seed=spec.seed,
            peer_id=peer_id, round=round, step=step,
        )  # fmt: skip

    def eval_batches(self, spec: RunSpec, num_batches: int) -> list[torch.Tensor]:
        return eval_batches(
            self.corpus.eval, seq_len=spec.seq_len, batch_size=spec.batch_size, num_batches=num_batches
        )


@dataclass
class ShardData:
    """The run's tokenized shards (its data artifact): sequences drawn at random, seeded as above.

    Each member draws uniformly over every train sequence; rendezvous assignment of shards to members
    (``swarm.data.assignment``: each sequence once per epoch across the swarm) is the next step."""

    shards: ShardSet
    folder: Path

    @property
    def description(self) -> str:
        index = self.shards.index
        return f"{index.train.sequences} sequences of {index.seq_len + 1} tokens (artifact)"

    @property
    def content_hash(self) -> str:
        return self.shards.index.content_hash

    def train_batch(self, spec: RunSpec, *, peer_id: bytes, round: int, step: int) -> torch.Tensor:
        sizes = self.shards.index.train.sizes
        rng = batch_rng(seed=spec.seed, peer_id=peer_id, round=round, step=step)
        picks = rng.integers(0, sum(sizes), size=spec.batch_size).tolist()
        return train_tensor(self.shards, sequence_refs(sizes, picks))

    def eval_batches(self, spec: RunSpec, num_batches: int) -> list[torch.Tensor]:
        return held_out_batches(self.shards, batch_size=spec.batch_size, num_batches=num_batches)


def pack_data(
    sources: tuple[str, ...],
    tokenizer: TextTokenizer,
    out: Path,
    *,
    seq_len: int,
    max_bytes: int,
    field: str = "text",
) -> None:
    """The founder's one tokenization of the run's data set into a new shard folder ``out``."""
    build_shards(
        lambda: read_documents(sources, field=field, render_chat=tokenizer.render_chat, max_bytes=max_bytes),
        tokenizer,
        out,
        PackConfig(seq_len=seq_len),
    )


def open_shards(folder: Path) -> ShardData:
    """The run's data artifact held in ``folder`` (its index and shards checked as they are read)."""
    return ShardData(ShardSet.open(folder), folder)
