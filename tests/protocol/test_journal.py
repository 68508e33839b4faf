"""The round journal between real libp2p hosts: a joiner holding an old x' replays the rounds it
missed and ends bit-identical; refusals, tampering and a journal that does not reach back fail
cleanly, and the provider keeps serving."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from swarm.averaging.outcome import Contribution, ReplayError, Status
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.averaging.transfer import fetch_journal
from swarm.compression.cocktail import CocktailCodec
from swarm.wire.frames import WireError
from tests.protocol.support import commit_to_copy, run, start_hosts, start_member

N = 20_000
SHARDS = 32


async def _train(members: list[Averager], rounds: int) -> None:
    """``rounds`` committed rounds with fresh random deltas; x' applied as node/loop.py does."""
    for _ in range(rounds):
        outcomes = await asyncio.gather(
            *(m.run_round(Contribution(delta=torch.randn(N) * 0.01, weight=1.0, samples=8, local_steps=2))
              for m in members)
        )  # fmt: skip
        for member, outcome in zip(members, outcomes, strict=True):
            assert outcome.status is Status.COMMITTED
            commit_to_copy(outcome, member.copy)
            member.record_committed(outcome)


def _fetch(host, provider: Averager, after_round: int, **kw):
    return fetch_journal(
        host, provider.me, run_id="proto", after_round=after_round, num_shards=SHARDS,
        max_part_bytes=provider.shard_frame_bytes, max_total_bytes=kw.pop("max_total_bytes", 4 * N),
        connect_timeout_s=5, timeout_s=30, **kw,
    )  # fmt: skip


def test_a_joiner_replays_the_missed_rounds_to_a_bit_identical_x_prime() -> None:
    # Seeded: whether the tampered byte below still decodes depends on the payload (a flipped bit can
    # make a 4-bit code invalid), and the second tampering check needs one that decodes.
    torch.manual_seed(3)

    async def go() -> None:
        hosts = await start_hosts(3)
        try:
            start = torch.randn(N)
            a, b = [await start_member(h, start, codec=CocktailCodec(), num_shards=SHARDS) for h in hosts[:2]]
            joiner = Averager(hosts[2], run_id="proto", codec=CocktailCodec(), global_copy=GlobalCopy(start.clone()),
                              num_shards=SHARDS, timing=a.timing)  # fmt: skip
            await _train([a, b], 2)
            old = GlobalCopy(
                a.copy.values.clone(),
                round=2,
                global_step=a.copy.global_step,
                swarm_samples=a.copy.swarm_samples,
            )  # fmt: skip (a checkpoint of round 2)
            await _train([a, b], 3)
            assert a.copy.digest == b.copy.digest and a.copy.round == 5

            entries = await _fetch(hosts[2], a, after_round=2)
            assert [e.round for e in entries] == [3, 4, 5]
            round2 = (
                old.values.clone(),
                dict(round=2, global_step=old.global_step, swarm_samples=old.swarm_samples),
            )
            assert sum(e.size for e in entries) < 4 * N * 3 / 20, "cocktail rounds are a few percent of x'"
            joiner.replay(entries, old)
            assert old.digest == a.copy.digest and torch.equal(old.values, a.copy.values)
            assert (old.round, old.global_step, old.swarm_samples) == (
                5,
                a.copy.global_step,
                a.copy.swarm_samples,
            )

            # From the very start, too; and an up-to-date requester gets nothing to replay.
            fresh = GlobalCopy(start.clone())
            joiner.replay(await _fetch(hosts[2], b, after_round=0), fresh)
            assert fresh.digest == b.copy.digest
            assert await _fetch(hosts[2], a, after_round=5) == []

            # A tampered payload does not lead to the journaled digest (or does not decode).
            first = entries[0]
            shard, payload = first.parts[0]
            bad = bytearray(payload)
            bad[-1] ^= 0x11
            tampered = dataclasses.replace(first, parts=((shard, bytes(bad)), *first.parts[1:]))
            with pytest.raises(ReplayError):
                joiner.replay([tampered], GlobalCopy(start.clone(), round=2))
            # ... also when later rounds follow it: only x' after the last round is checked, and the
            # tampered first round still shows there.
            with pytest.raises(ReplayError, match=r"rounds 3\.\.5 differs"):
                joiner.replay([tampered, *entries[1:]], GlobalCopy(round2[0].clone(), **round2[1]))
            joiner.replay(list(entries), GlobalCopy(round2[0].clone(), **round2[1]))  # the honest ones replay

            # A journal that does not reach back is refused, and so is one over the requester's budget.
            a.journal.clear()
            with pytest.raises(WireError, match="journal holds rounds none"):
                await _fetch(hosts[2], a, after_round=2)
            with pytest.raises(WireError, match="exceeds"):
                await _fetch(hosts[2], b, after_round=0, max_total_bytes=100)
            # The provider still serves.
            assert [e.round for e in await _fetch(hosts[2], b, after_round=4)] == [5]
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
