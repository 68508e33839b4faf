"""Journal replay: apply rounds others committed to our x', exactly as their members applied them.

Pure apart from the codecs: decode each journaled part, add it to x' on its support, shard after
shard, round after round; then one digest check against the last round's.
"""

from __future__ import annotations

from collections.abc import Sequence

from swarm.averaging.context import CodecSchedule
from swarm.averaging.journal import JournalEntry
from swarm.averaging.outcome import ReplayError
from swarm.averaging.state import GlobalCopy
from swarm.compression.codecs import CodecContext, CodecError


def replay(entries: Sequence[JournalEntry], target: GlobalCopy, codecs: CodecSchedule) -> None:
    """Apply journaled rounds to ``target`` exactly as their members did (decode, then add, per
    shard), then check x's digest against the last round's.

    Raises ReplayError on a part this run cannot decode or a digest that differs; ``target`` is
    then partly changed, so callers replay into a copy they can throw away.
    """
    layout = codecs.layout
    for entry in entries:
        if entry.round != target.round + 1:
            raise ReplayError(f"journal round {entry.round} does not follow round {target.round}")
        codec = codecs.codec_for(entry.round)
        for shard, payload in entry.parts:
            if not 0 <= shard < layout.num_shards:
                raise ReplayError(f"journal part names shard {shard} of {layout.num_shards}")
            start, end = layout.bounds(shard)
            ctx = CodecContext(round=entry.round, shard=shard)
            try:
                update = codec.decode_support(payload, end - start, ctx)
            except CodecError as e:
                raise ReplayError(f"round {entry.round}, shard {shard}: {e}") from None
            offset, stride = codec.support(end - start, ctx)
            target.apply_shard(start + offset, update, stride)
        target.round = entry.round
        target.global_step += entry.global_step_increment
        target.swarm_samples += entry.samples
    # One hash for the whole replay: x' after the last round is what must match (a joiner of a
    # 1B-parameter run replaying 40 rounds would otherwise hash 4 GB 40 times).
    if entries and target.digest != entries[-1].digest:
        raise ReplayError(
            f"x' after replaying rounds {entries[0].round}..{entries[-1].round} differs from the journaled digest"
        )
