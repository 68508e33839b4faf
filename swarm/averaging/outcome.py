"""What a member brings to a round and what it gets back: contribution, status, outcome.

Pure data: the node builds a ``Contribution``, the protocol answers with a ``RoundOutcome`` that
the node applies to x_i and x' (``node.trainer``) and journals (``Averager.applied``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch

from swarm.averaging.state import ShardUpdate


@dataclass(kw_only=True)
class Contribution:
    """What a member brings to a round: its delta x_i - x' and its work since the last one.

    ``delta`` is either dense (``[n]`` fp32 on the CPU, ``round`` None) or, with ``round`` set, only
    its entries on that round's supports (``Averager.supports(round)``, one shard after another),
    fp32 on any device: all that the round's codec reads. A GPU member gathers and encodes on its
    GPU and moves a few bytes per parameter less to the host; every member skips a flat copy of
    the model.
    """

    delta: torch.Tensor
    weight: float
    samples: int
    local_steps: int
    round: int | None = None


class ReplayError(ValueError):
    """A journal that does not replay onto our x' (undecodable part, or a digest that differs)."""


class Status(Enum):
    COMMITTED = "committed"
    REPAIR = "repair"
    NO_GROUP = "no_group"
    ABORTED = "aborted"


@dataclass(kw_only=True)
class RoundOutcome:
    status: Status
    round: int = 0
    members: list[bytes] = field(default_factory=list)
    updates: list[ShardUpdate] = field(default_factory=list)
    aborted_shards: list[int] = field(default_factory=list)
    repair_from: list[bytes] = field(default_factory=list)
    global_step_increment: int = 0
    samples: int = 0
    duration_s: float = 0.0
    transfer_s: float = 0.0
    folds: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    """Owner-side error this member held for shards it no longer owns, moved into its own residual:
    add each ``(start, values)`` to x_i whatever the status (x' does not change)."""
    codec: str = ""
    bytes_sent: int = 0
    """Bytes written to rendezvous and shard streams while this round ran (length prefixes included)."""
    bytes_received: int = 0
    fp32_bytes: int = 0
    """Payload bytes the fp32 codec would have moved for this member in the same roster."""

    @property
    def compression_ratio(self) -> float:
        """fp32 payload bytes over the bytes actually moved (control messages included)."""
        moved = self.bytes_sent + self.bytes_received
        return self.fp32_bytes / moved if moved else 0.0
