"""Which sequences a member trains: shards assigned by rendezvous hashing, epoch by epoch.

Ownership. In epoch ``e``, train shard ``s`` belongs to the member ``m`` with the highest
``sha256(seed, e, s, m)`` among the members a node can see (itself included). Every shard has exactly
one owner in any view; when a member leaves, only its shards move (each to the next-highest score),
and a newcomer takes only the shards it now scores highest on. Each member computes this alone, from
the members it sees: there is no global roster, and two views that agree assign alike.

Order. A member trains its shards of an epoch in the order of ``sha256(seed, e, s)``, and the rows of a
shard in the order of ``sha256(seed, e, s, row)``: a fresh order every epoch, the same on every machine.
Its ``DataPosition`` records its epoch and, per shard, how many of that shard's rows it has trained;
a member that persists its position and rejoins continues where it left off, and a member handed a
shard can continue where its previous owner stopped by merging that owner's position.

Epochs. A member moves to epoch ``e + 1`` once it has trained every row of the shards it owns in
``e`` (including when it owns none: with fewer shards than members, members take turns by epoch).
Members advance independently; with a stable membership every row of every train shard is trained
exactly once per epoch, and under churn a shard that changes hands mid-epoch may be partly repeated
or partly skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from swarm.data.errors import DataError
from swarm.data.shards import SequenceRef

IDLE_EPOCHS_PER_MEMBER = 64
"""A member owning no shard this many epochs per member in a row means a broken view (it cannot
happen by chance: the odds are below e^-64), and is an error rather than an endless loop."""


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def owner_score(*, seed: int, epoch: int, shard: int, peer_id: bytes) -> bytes:
    """The rendezvous score of ``peer_id`` for ``shard`` in ``epoch``; the highest owns the shard."""
    return hashlib.sha256(b"swarm.data.owner\0" + _u64(seed) + _u64(epoch) + _u64(shard) + peer_id).digest()


def shard_owner(*, seed: int, epoch: int, shard: int, members: Collection[bytes]) -> bytes:
    """The member that trains ``shard`` in ``epoch``."""
    if not members:
        raise ValueError("a shard needs at least one member to own it")
    return max(members, key=lambda m: (owner_score(seed=seed, epoch=epoch, shard=shard, peer_id=m), m))


@lru_cache(maxsize=16)
def _owned(seed: int, epoch: int, num_shards: int, members: frozenset[bytes], me: bytes) -> tuple[int, ...]:
    mine = [
        s for s in range(num_shards) if shard_owner(seed=seed, epoch=epoch, shard=s, members=members) == me
    ]
    return tuple(
        sorted(
            mine,
            key=lambda s: hashlib.sha256(b"swarm.data.order\0" + _u64(seed) + _u64(epoch) + _u64(s)).digest(),
        )
    )


def owned_shards(
    *, seed: int, epoch: int, num_shards: int, members: Collection[bytes], me: bytes
) -> tuple[int, ...]:
    """The train shards ``me`` owns in ``epoch`` among ``members`` (``me`` counts as one), in the
    order it trains them. A node can fetch these ahead of time, and those of the next epoch."""
    return _owned(seed, epoch, num_shards, frozenset(members) | {me}, me)


@lru_cache(maxsize=256)
def row_order(*, seed: int, epoch: int, shard: int, rows: int) -> tuple[int, ...]:
    """The order in which a shard's ``rows`` are trained in ``epoch``."""
    prefix = b"swarm.data.row\0" + _u64(seed) + _u64(epoch) + _u64(shard)
    return tuple(sorted(range(rows), key=lambda r: hashlib.sha256(prefix + _u64(r)).digest()))


@dataclass(frozen=True)
class DataPosition:
    """How far a member is: its epoch and, per train shard, how many rows of it it has trained there."""

    epoch: int = 0
    trained: Mapping[int, int] = field(default_factory=dict)

    def with_trained(self, shard: int, rows: int) -> DataPosition:
        return DataPosition(self.epoch, {**self.trained, shard: rows})

    def merged(self, other: DataPosition) -> DataPosition:
        """This position with what ``other`` (another member's, of the same epoch) has trained: a
        shard handed over continues past its previous owner's rows. Other epochs add nothing."""
        if other.epoch != self.epoch:
            return self
        shards = set(self.trained) | set(other.trained)
        return DataPosition(
            self.epoch, {s: max(self.trained.get(s, 0), other.trained.get(s, 0)) for s in shards}
        )

    def to_json(self) -> bytes:
        """Canonical bytes, for a node to keep in its data folder."""
        body = {"epoch": self.epoch, "trained": sorted([s, n] for s, n in self.trained.items() if n > 0)}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DataPosition:
        """Parse ``to_json``'s bytes; DataError when they are not a position."""
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raw = None
        pairs = raw.get("trained") if isinstance(raw, dict) else None
        epoch = raw.get("epoch") if isinstance(raw, dict) else None
        if (
            type(epoch) is not int
            or epoch < 0
            or not isinstance(pairs, list)
            or not all(
                isinstance(p, list) and len(p) == 2 and all(type(x) is int and x >= 0 for x in p)
                for p in pairs
            )
            or len({p[0] for p in pairs}) != len(pairs)
        ):
            raise DataError("the saved data position is malformed; delete it to start the epoch again")
        trained = {p[0]: p[1] for p in pairs}
        return cls(epoch, trained)


def next_batch(
    sizes: Sequence[int],
    *,
    seed: int,
    members: Collection[bytes],
    me: bytes,
    position: DataPosition,
    batch_size: int,
) -> tuple[list[SequenceRef], DataPosition]:
    """The next ``batch_size`` train sequences of ``me`` and its position once they are trained.

    ``sizes`` is the sequence count of each train shard (``ShardIndex.train.sizes``), ``members``
    the peer ids ``me`` sees now. A batch takes the rest of one shard and continues with the next,
    and continues into the next epoch when ``me`` has trained all it owns in this one; the returned
    position's epoch is where the batch ends. The caller keeps the new position once the batch is
    trained (and persists it), and passes it to the next call.
    """
    if not sizes or min(sizes) < 1:
        raise ValueError("the data set needs at least one train shard, each with at least one sequence")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    view = frozenset(members) | {me}
    refs: list[SequenceRef] = []
    idle_epochs = 0
    while True:
        mine = _owned(seed, position.epoch, len(sizes), view, me)
        for shard in mine:
            done = position.trained.get(shard, 0)
            take = min(sizes[shard] - done, batch_size - len(refs))
            if take <= 0:
                continue
            order = row_order(seed=seed, epoch=position.epoch, shard=shard, rows=sizes[shard])
            refs.extend(SequenceRef(shard, row) for row in order[done : done + take])
            position = position.with_trained(shard, done + take)
            if len(refs) == batch_size:
                return refs, position
        idle_epochs = idle_epochs + 1 if not mine else 0
        if idle_epochs > IDLE_EPOCHS_PER_MEMBER * len(view):
            raise RuntimeError(f"{me.hex()} owned no shard in {idle_epochs} epochs in a row")
        position = DataPosition(position.epoch + 1)
