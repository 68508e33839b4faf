"""What a node trains and evaluates on: the run's byte corpus read locally, or the run's data artifact.

``WindowData`` is the embedded ``stdlib`` corpus (and older runs): each member reads the corpus
itself and draws random windows of its bytes. ``ShardData`` is a run whose founder tokenized its data
set once, with the model's tokenizer, and packed it into shards (``swarm.data.pack``), published as
the run's data artifact: every member trains on the same token ids, whatever its machine, its
tokenizer library's version or its Python, and never needs the founder's files.

``WindowData`` draws a member's batch as a pure function of (run seed, peer id, round, step), so a
resumed node picks up where it left. ``ShardData`` trains the shards rendezvous hashing assigns to the
member among the members it saw commit the last round (``swarm.data.assignment``): every sequence once
per epoch across the swarm as far as churn allows; its ``DataPosition`` goes into the node's resume
state, so a restarted member continues where its shards left off. Both give every node the same
held-out batches.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from swarm.data.assignment import DataPosition, next_batch
from swarm.data.batches import held_out_batches, train_tensor
from swarm.data.corpus import Corpus
from swarm.data.documents import read_documents
from swarm.data.pack import PackConfig, build_shards
from swarm.data.sampling import eval_batches, train_batch
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

    def see_members(self, members: Collection[bytes]) -> None:
        """The members this node saw commit the last round (or, at start, the live ones): whose
        shards are whose from the next batch on. Called only while no batch is being drawn."""
        ...

    def saved_position(self) -> str:
        """How far this node is in the data, for its resume state ("" when batches need no state)."""
        ...

    def restore_position(self, saved: str) -> None:
        """Continue from ``saved_position``'s text; DataError when it is not one."""
        ...


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

    def see_members(self, members: Collection[bytes]) -> None:
        pass  # random windows: whoever else trains, a member's batches are its own

    def saved_position(self) -> str:
        return ""

    def restore_position(self, saved: str) -> None:
        pass


@dataclass
class ShardData:
    """The run's tokenized shards (its data artifact), trained shard by shard as rendezvous hashing
    assigns them: each member trains the train shards it owns among the members it sees, in the
    epoch's order, and moves to the next epoch when it has trained them all."""

    shards: ShardSet
    folder: Path
    position: DataPosition = field(default_factory=DataPosition)
    members: frozenset[bytes] = frozenset()

    @property
    def description(self) -> str:
        index = self.shards.index
        return (
            f"{index.train.sequences} sequences of {index.seq_len + 1} tokens in"
            f" {len(index.train.shards)} shards (artifact)"
        )

    @property
    def content_hash(self) -> str:
        return self.shards.index.content_hash

    def train_batch(self, spec: RunSpec, *, peer_id: bytes, round: int, step: int) -> torch.Tensor:
        refs, self.position = next_batch(
            self.shards.index.train.sizes, seed=spec.seed, members=self.members, me=peer_id,
            position=self.position, batch_size=spec.batch_size,
        )  # fmt: skip
        return train_tensor(self.shards, refs)

    def eval_batches(self, spec: RunSpec, num_batches: int) -> list[torch.Tensor]:
        return held_out_batches(self.shards, batch_size=spec.batch_size, num_batches=num_batches)

    def see_members(self, members: Collection[bytes]) -> None:
        self.members = frozenset(members)

    def saved_position(self) -> str:
        return self.position.to_json().decode()

    def restore_position(self, saved: str) -> None:
        if saved:
            self.position = DataPosition.from_json(saved.encode())


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
