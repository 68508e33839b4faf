"""The member's exchange: encode its parts, send them to the owners, gather results, report, commit.

Encoded once per shard, each part goes to the shard's owner (this member reduces its own shards
itself, ``owner``); each owner answers every member with the same result bytes. The member then
tells the conductor which results it holds (a Receipt) and gets back the shards a strict majority
holds (the Commit). It applies exactly those: a shard whose owner died before enough members had
its result changes nobody's x'.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Sequence

import torch

from swarm.averaging.context import (
    COMMIT_MARGINS,
    MIN_WAIT_S,
    RESULTS_MARGINS,
    RoundContext,
    RoundServices,
    protocol_name,
)
from swarm.averaging.faults import Faults
from swarm.averaging.gathering import Gathering
from swarm.averaging.outcome import Contribution, RoundOutcome, Status
from swarm.averaging.owner import OwnerGroup, ShardOwner
from swarm.averaging.owner_errors import OwnerErrors
from swarm.averaging.shards import Span, gather
from swarm.averaging.state import ShardUpdate
from swarm.compression.codecs import CodecContext, CodecError
from swarm.peer_names import short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, WireError

logger = logging.getLogger(__name__)

MIN_LOCAL_RESULT_WAIT_S = 0.05
"""Least wait for this member's own shards' results: they are reduced on this event loop and may
be about to resolve when the deadline has just passed."""

Results = dict[int, tuple[pb.ShardResult, torch.Tensor]]
"""Results this member holds: shard -> (the owner's result, its aggregate decoded)."""


class MemberExchange:
    """This member's reduce and commit, one round at a time."""

    def __init__(self, services: RoundServices, owner: ShardOwner, errors: OwnerErrors, faults: Faults):
        self.services, self.owner, self.errors = services, owner, errors
        self.faults = faults
        """Test fault injection (``faults``); empty on every honest node."""

    async def reduce_and_commit(
        self,
        roster: pb.Roster,
        contribution: Contribution,
        conductor_stream: FramedStream | None,
        gathering: Gathering | None,
    ) -> RoundOutcome:
        s, layout = self.services, self.services.layout
        ctx = RoundContext.of(roster, s)
        members, owners, codec = ctx.members, ctx.owners, ctx.codec
        my_shards = [shard for shard, owner in enumerate(owners) if owner == s.me]
        if contribution.round not in (None, roster.round):
            raise ValueError(f"contribution packed for round {contribution.round}, roster of {roster.round}")
        spans = s.codecs.supports(roster.round)
        delta = contribution.delta if contribution.round is not None else gather(contribution.delta, spans)
        delta, folds = self._fold_moved_errors(roster, delta, spans, set(my_shards))
        mine = sum(layout.size(shard) for shard in my_shards)
        fp32_bytes = 4 * (2 * (layout.num_elements - mine) + 2 * (len(members) - 1) * mine)
        group = self.owner.open_group(ctx, my_shards)
        try:
            parts, own_decoded = self._encode_parts(ctx, contribution, delta, spans, set(my_shards))
            for shard in my_shards:
                self.owner.accept_part(group, s.me, parts[shard])
            results: Results = {}
            await self._gather_results(ctx, group, parts, results)
            transfer_s = s.clock.now() - ctx.started
            if len(results) == layout.num_shards:
                every_part = all(len(result.included) == len(members) for result, _ in results.values())
                s.transfer.record(transfer_s, roster.deadline_s, every_part=every_part)
            elif len(members) > 1:
                s.transfer.missed(roster.deadline_s)

            receipt = pb.Receipt(
                group_id=roster.group_id,
                shards=sorted(results),
                result_digests=[hashlib.sha256(results[r][0].payload).digest() for r in sorted(results)],
            )
            commit = await self._send_receipt(receipt, ctx, conductor_stream, gathering)
        finally:
            if conductor_stream is not None:
                conductor_stream.close()
            self.owner.forget_later(ctx)
        outcome = functools.partial(
            RoundOutcome,
            round=roster.round,
            members=members,
            transfer_s=transfer_s,
            folds=folds,
            codec=codec.name,
            fp32_bytes=fp32_bytes,
        )
        if commit is None:
            logger.warning("round %d: no commit from the conductor; applying nothing", roster.round)
            return outcome(status=Status.ABORTED)
        committed = dict(zip(commit.shards, commit.result_digests, strict=False))
        updates, lacking = self._updates(ctx, committed, results, own_decoded)
        self.owner.keep_errors(group, set(committed))
        if lacking:
            # The others apply these shards; we cannot. Apply nothing and take their x' (a replay of
            # this round from their journal, which holds our parts); until then, and if that fails,
            # our delta stays in x_i - x' like any unsent work.
            logger.warning(
                "round %d: the commit names shards %s whose results this member lacks; repairing",
                roster.round,
                lacking,
            )
            return outcome(status=Status.REPAIR, repair_from=[m for m in members if m != s.me])
        return outcome(
            status=Status.COMMITTED,
            updates=updates,
            aborted_shards=sorted(set(range(layout.num_shards)) - set(committed)),
            global_step_increment=round(sum(m.local_steps for m in roster.members) / len(members)),
            samples=sum(m.samples for m in roster.members),
        )

    def _encode_parts(
        self,
        ctx: RoundContext,
        contribution: Contribution,
        delta: torch.Tensor,
        spans: Sequence[Span],
        my_shards: set[int],
    ) -> tuple[dict[int, pb.ShardPart], dict[int, torch.Tensor]]:
        """Every part, encoded once, and what each decodes to: C[delta_i] is what this member
        subtracts if its part is included. Decoded values live on each shard's support
        (codec.support): all that a round changes."""
        s, codec = self.services, ctx.codec
        misbehave = self.faults.misbehave
        parts: dict[int, pb.ShardPart] = {}
        own_decoded: dict[int, torch.Tensor] = {}
        for shard, values in enumerate(delta.split([span.count for span in spans])):
            size = s.layout.size(shard)
            codec_ctx = CodecContext(round=ctx.round, shard=shard)
            payload = codec.encode_support(values, size, codec_ctx)
            own_decoded[shard] = codec.decode_support(payload, size, codec_ctx)
            if misbehave is not None and shard not in my_shards:
                payload = misbehave.payload(codec, values, size, codec_ctx, s.shard_frame_bytes)
            parts[shard] = pb.ShardPart(
                group_id=ctx.roster.group_id,
                shard=shard,
                weight=contribution.weight,
                codec=codec.name,
                payload=payload,
            )
        return parts, own_decoded

    async def _gather_results(
        self, ctx: RoundContext, group: OwnerGroup, parts: dict[int, pb.ShardPart], results: Results
    ) -> None:
        me = self.services.me
        by_owner: dict[bytes, list[int]] = {}
        for shard, owner in enumerate(ctx.owners):
            by_owner.setdefault(owner, []).append(shard)
        results_deadline = ctx.phase_end(RESULTS_MARGINS)
        exchanges = [
            self._exchange_with_owner(
                owner, ctx, [parts[shard] for shard in shards], results, results_deadline
            )
            for owner, shards in by_owner.items()
            if owner != me
        ]
        local = [self._collect_local(group, results, results_deadline)] if group.shards else []
        await asyncio.gather(*exchanges, *local)

    def _updates(
        self,
        ctx: RoundContext,
        committed: dict[int, bytes],
        results: Results,
        own_decoded: dict[int, torch.Tensor],
    ) -> tuple[list[ShardUpdate], list[int]]:
        """What to apply of each committed shard, and the committed shards whose results we lack."""
        me, layout = self.services.me, self.services.layout
        updates = []
        lacking = []
        for shard in sorted(committed):
            held = results.get(shard)
            if held is None or hashlib.sha256(held[0].payload).digest() != committed[shard]:
                lacking.append(shard)  # the majority's bytes, which we lack: repair
                continue
            result, aggregate = held
            start, end = layout.bounds(shard)
            offset, stride = ctx.codec.support(end - start, CodecContext(round=ctx.round, shard=shard))
            included = tuple(bytes(p) for p in result.included)
            updates.append(
                ShardUpdate(
                    shard=shard,
                    start=start,
                    aggregate=aggregate,
                    own=own_decoded[shard] if me in included else None,
                    offset=offset,
                    stride=stride,
                    size=end - start,
                    payload=bytes(result.payload),
                    owner=ctx.owners[shard],
                    included=included,
                )
            )
        return updates, lacking

    def _fold_moved_errors(
        self, roster: pb.Roster, delta: torch.Tensor, spans: Sequence[Span], my_shards: set[int]
    ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """Move owner-side error of shards this member no longer owns into its own residual.

        The owner error e of a shard is averaged mass that x' has not received yet. When membership
        changes and the shard gets another owner, this member adds e / share (its share of the mean)
        to its delta now and to x_i afterwards (``RoundOutcome.folds``): the new owner's mean then
        carries e, and whatever compression leaves of it stays in x_i - x' like any unsent work. So
        ``x' + sum_i share_i (x_i - x') + sum(owner errors)`` is conserved; only an owner that leaves
        the swarm takes its error with it (at most one round's compression error of its shards).
        ``delta`` holds the round's supports (``spans``); the folds are dense per shard.
        """
        moved = self.errors.take_moved(my_shards)
        if not moved:
            return delta, []
        weights = {bytes(m.peer_id): m.weight for m in roster.members}
        share = weights[self.services.me] / sum(weights.values())
        delta = delta.clone()
        per_shard = delta.split([span.count for span in spans])  # views: adding to them adds to delta
        folds = []
        for shard, error in moved:
            start, _ = self.services.layout.bounds(shard)
            values = error / share
            span = spans[shard]
            on_support = values[span.first - start : span.stop - start : span.stride]
            per_shard[shard].add_(on_support.to(delta.device))
            folds.append((start, values))
        logger.info(
            "round %d: moved owner error of %d shards into this member's residual", roster.round, len(folds)
        )
        return delta, folds

    async def _send_receipt(
        self,
        receipt: pb.Receipt,
        ctx: RoundContext,
        conductor_stream: FramedStream | None,
        gathering: Gathering | None,
    ) -> pb.Commit | None:
        clock, roster = self.services.clock, ctx.roster
        commit_deadline = ctx.phase_end(COMMIT_MARGINS)
        if gathering is not None:  # we conduct this round
            future = gathering.receipts.get(self.services.me)
            if future is not None and not future.done():
                future.set_result(receipt)
            try:
                return await asyncio.wait_for(
                    asyncio.shield(gathering.commit), timeout=max(MIN_WAIT_S, commit_deadline - clock.now())
                )
            except TimeoutError:
                return None
        assert conductor_stream is not None
        try:
            async with asyncio.timeout_at(commit_deadline):
                await conductor_stream.send(pb.Frame(receipt=receipt))
                frame = await conductor_stream.expect("commit")
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.warning("round %d: lost the conductor before the commit: %s", roster.round, e)
            return None
        if frame.commit.group_id != roster.group_id:
            return None
        return frame.commit

    async def _exchange_with_owner(
        self, owner: bytes, ctx: RoundContext, parts: list[pb.ShardPart], results: Results, deadline: float
    ) -> None:
        s = self.services
        expected = {p.shard for p in parts}
        stream: FramedStream | None = None
        try:
            async with asyncio.timeout_at(deadline):
                stream = await s.host.open_stream(
                    owner,
                    protocol_name(s.run_id, "shard"),
                    timeout_s=s.timing.connect_timeout_s,
                    max_frame_bytes=s.shard_frame_bytes,
                    counter=s.traffic,
                )
                for part in parts:
                    await stream.send(pb.Frame(part=part))
                    s.on_send("part")
                while expected:
                    frame = await stream.expect("result", "reject")
                    if frame.WhichOneof("body") == "reject":
                        logger.warning(
                            "owner %s rejected our parts: %s", short_name(owner), frame.reject.reason
                        )
                        return
                    result = frame.result
                    decoded = self._decode_result(result, ctx) if result.shard in expected else None
                    if decoded is None:
                        s.counters.rejections += 1
                        logger.warning(
                            "dropping an invalid result for shard %d from %s", result.shard, short_name(owner)
                        )
                        return
                    expected.discard(result.shard)
                    if self.faults.loses_results(ctx.round, owner, ctx.members, s.me):
                        continue  # the test hook: as if this result never arrived
                    results[result.shard] = (result, decoded)
        except (TimeoutError, WireError, ConnectionError) as e:
            logger.info(
                "lost owner %s with %d shard results missing: %s", short_name(owner), len(expected), e
            )
        # The boundary with the host's daemon (another process): p2pd refused the stream, the
        # owner is gone; its errors are untyped.
        except Exception as e:
            logger.info("owner %s unreachable: %s", short_name(owner), e)
        finally:
            if stream is not None:
                stream.close()

    def _decode_result(self, result: pb.ShardResult, ctx: RoundContext) -> torch.Tensor | None:
        """The aggregate of a result, decoded exactly as it will be applied; None if it is invalid."""
        layout, codec = self.services.layout, ctx.codec
        if result.group_id != ctx.roster.group_id or result.codec != codec.name:
            return None
        if not 0 <= result.shard < layout.num_shards:
            return None
        included = [bytes(p) for p in result.included]
        if not included or not set(included) <= set(ctx.members):
            return None
        start, end = layout.bounds(result.shard)
        try:
            return codec.decode_support(
                bytes(result.payload), end - start, CodecContext(round=ctx.round, shard=result.shard)
            )
        except CodecError:
            return None

    async def _collect_local(self, group: OwnerGroup, results: Results, deadline: float) -> None:
        clock = self.services.clock
        for shard in group.shards:
            try:
                result = await asyncio.wait_for(
                    asyncio.shield(group.results[shard]),
                    timeout=max(MIN_LOCAL_RESULT_WAIT_S, deadline - clock.now()),
                )
            except TimeoutError:
                return
            if result is not None:
                decoded = self._decode_result(result, group.ctx)
                if decoded is not None:
                    results[shard] = (result, decoded)
