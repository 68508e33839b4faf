"""The shard owner: gathers the members' parts of its shards, reduces them with defence, sends results.

Every member sends its part of each shard to the shard's owner on one shard stream per owner and
waits on that stream for the owner's result: the weighted mean (or centred clip) of the valid
parts that arrived before the owner's deadline, plus the owner's error feedback, encoded once, the
same bytes to every member, naming the members it included. A malformed, non-finite or outlying
part is excluded and its sender banned (its later parts and joins are refused).
"""

from __future__ import annotations

import asyncio
import logging

import torch

from swarm.averaging.context import FORGET_MARGINS, RECEIPTS_MARGINS, RoundContext, RoundServices
from swarm.averaging.defence import centered_clip, find_outliers
from swarm.averaging.owner_errors import OwnerErrors
from swarm.averaging.reduce import ContributionError, apply_error_feedback, check_contribution, weighted_mean
from swarm.compression.codecs import CodecContext, CodecError
from swarm.peer_names import short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, StreamClosed, WireError

logger = logging.getLogger(__name__)

MIN_PART_WAIT_S = 0.01
"""Least wait for the next part or group: the deadline check after it ends the loop."""


class OwnerGroup:
    """An owner's side of one round: parts per owned shard until the deadline, then the results.

    A result future resolves to None when the shard has no result (no valid part arrived).
    """

    def __init__(self, ctx: RoundContext, shards: list[int]):
        self.ctx, self.roster, self.shards = ctx, ctx.roster, shards
        self.weights = {bytes(m.peer_id): m.weight for m in ctx.roster.members}
        self.deadline = ctx.parts_deadline
        self.parts: dict[int, dict[bytes, tuple[float, torch.Tensor]]] = {s: {} for s in shards}
        self.failed: dict[int, set[bytes]] = {s: set() for s in shards}
        self.arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.results: dict[int, asyncio.Future[pb.ShardResult | None]] = {
            s: loop.create_future() for s in shards
        }
        self.pending_error: dict[int, tuple[int, int, torch.Tensor]] = {}
        """Owner-side residuals of this round on each shard's support, (offset, stride, values):
        written into the error buffers only for shards that commit."""

    def resolve_missing(self) -> None:
        for future in self.results.values():
            if not future.done():
                future.set_result(None)

    def complete(self) -> bool:
        return all(len(self.parts[s]) + len(self.failed[s]) >= len(self.weights) for s in self.shards)


class ShardOwner:
    """This node's owner role across rounds: its open groups, its error buffers, its shard streams."""

    def __init__(self, services: RoundServices, errors: OwnerErrors):
        self.services, self.errors = services, errors
        self._groups: dict[bytes, OwnerGroup] = {}
        self._groups_changed = asyncio.Event()

    def open_group(self, ctx: RoundContext, shards: list[int]) -> OwnerGroup:
        """Start owning ``shards`` of the round: parts may come in, the reduction runs until the deadline."""
        group = OwnerGroup(ctx, shards)
        self._groups[ctx.group_id] = group
        self._groups_changed.set()
        self.services.background.spawn(self._finish(group))
        return group

    def forget_later(self, ctx: RoundContext) -> None:
        """Drop the round's group once no member can still be sending to it."""
        self.services.background.spawn(
            self._forget(ctx.group_id, delay_s=ctx.roster.deadline_s + FORGET_MARGINS * ctx.margin_s)
        )

    def keep_errors(self, group: OwnerGroup, committed: set[int]) -> None:
        # Owner-side error feedback survives only for shards that committed: an aborted shard's
        # deltas come back next round, and its residual must not be counted twice.
        for shard in group.shards:
            if shard in committed and shard in group.pending_error:
                self.errors.keep(shard, *group.pending_error[shard])

    def accept_part(self, group: OwnerGroup, peer: bytes, part: pb.ShardPart) -> None:
        shard = part.shard
        if shard not in group.parts or peer in group.parts[shard] or peer in group.failed[shard]:
            raise WireError(f"unexpected part for shard {shard}")
        try:
            codec = group.ctx.codec
            if part.codec != codec.name:
                raise ContributionError(f"part uses codec {part.codec!r}, this round uses {codec.name!r}")
            start, end = self.services.layout.bounds(shard)
            ctx = CodecContext(round=group.roster.round, shard=shard)
            values = codec.decode_support(bytes(part.payload), end - start, ctx)
            weight = group.weights[peer]
            offset, stride = codec.support(end - start, ctx)
            check_contribution(values, weight, len(range(offset, end - start, stride)))
        except (CodecError, ContributionError) as e:
            self.services.counters.rejections += 1
            group.failed[shard].add(peer)
            self._exclude(group, peer, shard, str(e))
        else:
            group.parts[shard][peer] = (weight, values)
        group.arrived.set()

    def _exclude(self, group: OwnerGroup, peer: bytes, shard: int, reason: str, ban: bool = True) -> None:
        """Count an excluded part and ban its sender (its later parts and joins are refused)."""
        s = self.services
        s.counters.excluded_parts += 1
        banned = ban and not s.bans.banned(peer)
        if ban:
            s.bans.ban(peer, s.defence.ban_s)
        logger.warning(
            "round %d: excluded %s from shard %d: %s%s",
            group.roster.round,
            short_name(peer),
            shard,
            reason,
            f"; banned for {s.defence.ban_s:.0f} s" if banned and s.defence.ban_s else "",
        )

    def _exclude_sender(self, group: OwnerGroup, peer: bytes, reason: str, ban: bool = True) -> None:
        """None of the peer's remaining parts will come (its stream broke or it is banned): do not
        wait for them. ``ban``: it broke the protocol, not merely its connection."""
        pending = [s for s in group.shards if peer not in group.parts[s] and peer not in group.failed[s]]
        for shard in pending:
            group.failed[shard].add(peer)
        if pending:
            self._exclude(group, peer, pending[0], reason, ban=ban)
        group.arrived.set()

    def _aggregate(self, group: OwnerGroup, shard: int) -> torch.Tensor | None:
        """The shard's aggregate over its valid parts, outliers excluded first; None without parts."""
        defence = self.services.defence
        contributions = group.parts[shard]
        for peer, reason in find_outliers(contributions, defence.outlier_factor).items():
            del contributions[peer]
            group.failed[shard].add(peer)
            self._exclude(group, peer, shard, reason)
        if not contributions:
            return None
        if defence.aggregation == "centered-clip":
            return centered_clip(contributions, defence.clip_factor, defence.clip_iterations)
        return weighted_mean(contributions)

    async def _finish(self, group: OwnerGroup) -> None:
        clock = self.services.clock
        try:
            while not group.complete() and clock.now() < group.deadline:
                group.arrived.clear()
                try:
                    await asyncio.wait_for(
                        group.arrived.wait(), timeout=max(MIN_PART_WAIT_S, group.deadline - clock.now())
                    )
                except TimeoutError:
                    break
            codec = group.ctx.codec
            for shard in group.shards:
                aggregate = self._aggregate(group, shard)
                if aggregate is None:
                    continue
                contributions = group.parts[shard]
                start, end = self.services.layout.bounds(shard)
                ctx = CodecContext(round=group.roster.round, shard=shard)
                # Parts and their mean live on the support; so does all the error feedback can change.
                offset, stride = codec.support(end - start, ctx)
                corrected = apply_error_feedback(aggregate, self.errors.on_support(shard, offset, stride))
                payload = codec.encode_support(corrected, end - start, ctx)
                left = corrected - codec.decode_support(payload, end - start, ctx)
                group.pending_error[shard] = (offset, stride, left)
                group.results[shard].set_result(
                    pb.ShardResult(
                        group_id=group.roster.group_id,
                        shard=shard,
                        included=sorted(contributions),
                        codec=codec.name,
                        payload=payload,
                    )
                )
        finally:
            group.resolve_missing()  # never leave a member's stream waiting on a result that will not come
            for contributions in group.parts.values():
                contributions.clear()

    async def _wait_group(self, group_id: bytes, timeout_s: float) -> OwnerGroup | None:
        clock = self.services.clock
        deadline = clock.now() + timeout_s
        while group_id not in self._groups and clock.now() < deadline:
            self._groups_changed.clear()
            try:
                await asyncio.wait_for(
                    self._groups_changed.wait(), timeout=max(MIN_PART_WAIT_S, deadline - clock.now())
                )
            except TimeoutError:
                break
        return self._groups.get(group_id)

    async def _forget(self, group_id: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._groups.pop(group_id, None)

    def _first_part_wait_s(self, peer: bytes) -> float:
        """How long a shard stream may take to bring its first part: until the latest parts deadline
        of the rounds we own shards of that have ``peer`` in them (a thousand members' parts share an
        owner's downlink), and at least the connect timeout (a round we do not know yet)."""
        now = self.services.clock.now()
        deadlines = [g.ctx.parts_deadline - now for g in self._groups.values() if peer in g.weights]
        return max([self.services.timing.connect_timeout_s, *deadlines])

    async def handle_shard(self, peer: bytes, stream: FramedStream) -> None:
        """Serve one member's shard stream: its parts of our shards in, our results out."""
        s = self.services
        try:
            first = await asyncio.wait_for(stream.expect("part"), timeout=self._first_part_wait_s(peer))
        except TimeoutError:  # its link could not carry a part in time: do not wait on it to the deadline
            for owned in list(self._groups.values()):
                if peer in owned.weights:
                    self._exclude_sender(owned, peer, "no part before the parts deadline", ban=False)
            raise
        except StreamClosed:
            raise
        except WireError as e:  # oversized or malformed before we know its round: every round it is in
            s.counters.rejections += 1
            s.bans.ban(peer, s.defence.ban_s)
            for owned in list(self._groups.values()):
                if peer in owned.weights:
                    self._exclude_sender(owned, peer, str(e))
            raise
        group_id = bytes(first.part.group_id)
        group = await self._wait_group(group_id, timeout_s=s.timing.join_timeout_s)
        if group is None or peer not in group.weights:
            s.counters.rejections += 1
            reason = "unknown round" if group is None else "not a member of this round"
            logger.warning("rejected shard parts from %s: %s", short_name(peer), reason)
            await stream.send(pb.Frame(reject=pb.Reject(reason=reason)))
            return
        if s.bans.banned(peer):
            s.counters.rejections += 1
            self._exclude_sender(group, peer, "banned", ban=False)
            await stream.send(pb.Frame(reject=pb.Reject(reason="banned for an invalid or outlying part")))
            return
        async with asyncio.timeout_at(group.ctx.phase_end(RECEIPTS_MARGINS)):
            frame: pb.Frame | None = first
            for _ in group.shards:
                try:
                    if frame is None:
                        frame = await stream.expect("part")
                    if frame.part.group_id != group_id:
                        raise WireError("parts of two rounds on one stream")
                except StreamClosed as e:  # it left or its connection broke: not its fault
                    self._exclude_sender(group, peer, str(e), ban=False)
                    raise
                except WireError as e:  # oversized or malformed: the rest of its parts cannot come
                    s.counters.rejections += 1
                    self._exclude_sender(group, peer, str(e))
                    raise
                self.accept_part(group, peer, frame.part)
                frame = None
            for shard in group.shards:
                result = await asyncio.shield(group.results[shard])
                if result is None:
                    continue
                await stream.send(pb.Frame(result=result))
                s.on_send("result")
