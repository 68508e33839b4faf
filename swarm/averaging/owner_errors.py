"""The owner-side error feedback buffers of the shards this node reduced: what C[Delta] did not carry.

One buffer per shard, dense over the shard, fp32 on the CPU. A buffer changes only when a shard
this node owned commits (``keep``); when a shard moves to another owner the buffer leaves with
``take_moved`` and the member folds it into its own residual (``exchange``).
"""

from __future__ import annotations

import torch

from swarm.averaging.shards import ShardLayout


class OwnerErrors:
    def __init__(self, layout: ShardLayout):
        self.layout = layout
        self.buffers: dict[int, torch.Tensor] = {}

    def snapshot(self) -> dict[int, torch.Tensor]:
        """The buffers by shard (for the node's resume state)."""
        return dict(self.buffers)

    def restore(self, errors: dict[int, torch.Tensor]) -> None:
        """Take back saved buffers; those of shards that moved meanwhile fold at the next round."""
        for shard, error in errors.items():
            if not 0 <= shard < self.layout.num_shards or error.numel() != self.layout.size(shard):
                raise ValueError(f"saved owner error for shard {shard} does not fit this run's layout")
            self.buffers[shard] = error.to(torch.float32).contiguous()

    def on_support(self, shard: int, offset: int, stride: int) -> torch.Tensor | None:
        error = self.buffers.get(shard)
        return None if error is None else error[offset::stride]

    def keep(self, shard: int, offset: int, stride: int, left: torch.Tensor) -> None:
        """A committed shard's owner error: ``left`` (what its result did not carry) on the support,
        the buffer as it was elsewhere (entries off the support were not in this round's mean)."""
        size = self.layout.size(shard)
        if left.numel() == size:  # the support is the whole shard (an exact codec): nothing else is kept
            if bool(left.any()):
                self.buffers[shard] = left
            else:
                self.buffers.pop(shard, None)
            return
        error = self.buffers.get(shard)
        if error is None:
            if not bool(left.any()):
                return
            error = self.buffers[shard] = torch.zeros(size)
        error[offset::stride] = left

    def take_moved(self, my_shards: set[int]) -> list[tuple[int, torch.Tensor]]:
        """Remove and return the buffers of shards this node no longer owns, in shard order."""
        moved = sorted(shard for shard in self.buffers if shard not in my_shards)
        return [(shard, self.buffers.pop(shard)) for shard in moved]
