"""Compressed rounds between real libp2p hosts in one process: error feedback and byte accounting.

The conservation law of two-level error feedback (swarm/averaging/exchange.py,
``MemberExchange._fold_moved_errors``):
for a round of N members with equal weights and no training in between,

    x' + (1/N) sum_i (x_i - x') + sum_s E_s

is the same before and after the round, where E_s is the owner-side error of shard s, wherever it
is held. When membership changes, ownership moves, and the former owner folds its error into its
own residual; only a departed member's residual and owner error leave the sum.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from swarm.averaging.outcome import Contribution, Status
from swarm.averaging.round import Averager
from swarm.averaging.shards import assign_owners, gather
from swarm.averaging.state import GlobalCopy
from swarm.compression.cocktail import CocktailCodec
from swarm.compression.codecs import Fp32Codec
from tests.protocol.support import apply_outcome, run, start_hosts, start_member

N = 20_000
SHARDS = 32


def _owner_error_total(averagers: list[Averager]) -> torch.Tensor:
    total = torch.zeros(N, dtype=torch.float64)
    for averager in averagers:
        for shard, error in averager.owner_errors().items():
            start, end = averager.layout.bounds(shard)
            total[start:end] += error.double()
    return total


def _conserved(copy: GlobalCopy, residuals: list[torch.Tensor], averagers: list[Averager]) -> torch.Tensor:
    mean_residual = torch.stack([r.double() for r in residuals]).mean(0)
    return copy.values.double() + mean_residual + _owner_error_total(averagers)


def test_owner_error_follows_ownership_moves_and_nothing_else_is_lost() -> None:
    async def go() -> None:
        a_host, b_host, c_host, d_host = await start_hosts(4)
        try:
            start = torch.randn(N)
            codec = CocktailCodec()
            a, b, c = [
                await start_member(h, start, codec=codec, num_shards=SHARDS) for h in (a_host, b_host, c_host)
            ]
            x = {name: start + torch.randn(N) * 0.01 for name in "abc"}

            # Round 1: a, b, c. Nothing is lost: the sum is conserved exactly (up to fp32 rounding).
            before = _conserved(a.copy, [x[n] - start for n in "abc"], [])
            outcomes = await asyncio.gather(
                *(
                    m.run_round(
                        Contribution(delta=x[n] - m.copy.values, weight=1.0, samples=1, local_steps=1)
                    )
                    for n, m in zip("abc", (a, b, c), strict=True)
                )
            )
            assert all(o.status is Status.COMMITTED and not o.aborted_shards for o in outcomes)
            assert not any(o.folds for o in outcomes)
            for n, m, o in zip("abc", (a, b, c), outcomes, strict=True):
                x[n] = apply_outcome(o, x[n], m.copy)
            assert a.copy.digest == b.copy.digest == c.copy.digest
            after = _conserved(a.copy, [x[n] - a.copy.values for n in "abc"], [a, b, c])
            torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
            assert _owner_error_total([a, b, c]).abs().sum() > 0, "cocktail leaves owner-side error"

            # Round 2: c leaves, d joins with x_d = x'. Shards move (c's to the others, some of a's and
            # b's to d): a and b fold their moved error into their residuals; c's error is the loss.
            await c.announce_leaving()
            d = await start_member(d_host, a.copy.values, codec=codec, num_shards=SHARDS)
            d.copy.round = a.copy.round
            x["d"] = a.copy.values.clone()
            members = sorted(h.peer_id for h in (a_host, b_host, d_host))
            old_owners = assign_owners("proto", SHARDS, sorted(h.peer_id for h in (a_host, b_host, c_host)))
            new_owners = assign_owners("proto", SHARDS, members)
            moved_from_ab = [
                s for s in range(SHARDS) if old_owners[s] != new_owners[s] and old_owners[s] != c_host.peer_id
            ]
            assert moved_from_ab, "with 32 shards some of a's or b's shards move to d"
            before = _conserved(a.copy, [x[n] - a.copy.values for n in "abd"], [a, b, d])
            outcomes = await asyncio.gather(
                *(
                    m.run_round(
                        Contribution(delta=x[n] - m.copy.values, weight=1.0, samples=1, local_steps=1)
                    )
                    for n, m in zip("abd", (a, b, d), strict=True)
                )
            )
            assert all(o.status is Status.COMMITTED and len(o.members) == 3 for o in outcomes)
            folded = {a.layout.bounds(s)[0] for s in moved_from_ab}
            assert {start for o in outcomes for start, _ in o.folds} == folded
            for n, m, o in zip("abd", (a, b, d), outcomes, strict=True):
                x[n] = apply_outcome(o, x[n], m.copy)
            assert a.copy.digest == b.copy.digest == d.copy.digest
            after = _conserved(a.copy, [x[n] - a.copy.values for n in "abd"], [a, b, d])
            torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
            # No member keeps error for a shard it does not own.
            for m in (a, b, d):
                assert all(new_owners[s] == m.me for s in m.owner_errors())
        finally:
            for host in (a_host, b_host, c_host, d_host):
                await host.shutdown()

    run(go())


def test_an_exact_round_flushes_every_residual_and_owner_error_into_x_prime() -> None:
    async def go() -> None:
        hosts = await start_hosts(3)
        try:
            start = torch.randn(N)
            members = [
                await start_member(
                    h, start, codec=CocktailCodec(), num_shards=SHARDS, exact_every=2, run_id="flush"
                )
                for h in hosts
            ]
            x = [start + torch.randn(N) * 0.01 for _ in members]
            for round_id in (1, 2):
                before = _conserved(members[0].copy, [xi - members[0].copy.values for xi in x], members)
                outcomes = await asyncio.gather(
                    *(
                        m.run_round(
                            Contribution(delta=xi - m.copy.values, weight=1.0, samples=1, local_steps=1)
                        )
                        for m, xi in zip(members, x, strict=True)
                    )
                )
                assert all(o.status is Status.COMMITTED and not o.aborted_shards for o in outcomes)
                assert {o.codec for o in outcomes} == {"cocktail" if round_id == 1 else "fp32"}
                x = [apply_outcome(o, xi, m.copy) for o, xi, m in zip(outcomes, x, members, strict=True)]
                after = _conserved(members[0].copy, [xi - members[0].copy.values for xi in x], members)
                torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
                if round_id == 1:
                    assert _owner_error_total(members).abs().sum() > 0
                    assert all(not torch.equal(xi, members[0].copy.values) for xi in x)
            # After the exact round nothing is held back anywhere: x_i == x' on every member, no owner
            # error, and x' is the plain mean of where the members' local models had got to.
            assert len({m.copy.digest for m in members}) == 1
            assert not any(m.owner_errors() for m in members)
            for xi in x:
                torch.testing.assert_close(xi, members[0].copy.values, rtol=0, atol=1e-6)
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())


def test_round_bytes_are_counted_and_cocktail_moves_two_orders_less_than_fp32() -> None:
    async def go() -> None:
        n = 400_000
        a_host, b_host = await start_hosts(2)
        try:
            sent = {}
            for codec in (Fp32Codec(), CocktailCodec()):
                start = torch.randn(n)
                run_id = f"bytes-{codec.name}"
                a = await start_member(a_host, start, codec=codec, num_shards=4, run_id=run_id)
                b = await start_member(b_host, start, codec=codec, num_shards=4, run_id=run_id)
                outcomes = await asyncio.gather(
                    *(
                        m.run_round(
                            Contribution(delta=torch.randn(n) * 0.01, weight=1.0, samples=1, local_steps=1)
                        )
                        for m in (a, b)
                    )
                )
                assert all(o.status is Status.COMMITTED for o in outcomes)
                for o in outcomes:
                    # Each member sends its parts of the other's shards and one result per own shard.
                    assert o.fp32_bytes == 4 * 2 * n
                    assert o.bytes_sent > 0 and o.bytes_received > 0 and o.codec == codec.name
                sent[codec.name] = sum(o.bytes_sent for o in outcomes)
                if codec.name == "fp32":
                    # Payloads are the fp32 bytes themselves; headers and control frames add little.
                    assert (
                        1.0 <= sum(o.bytes_sent + o.bytes_received for o in outcomes) / (2 * 4 * 2 * n) < 1.01
                    )
                else:
                    assert min(o.compression_ratio for o in outcomes) > 100
                await a.shutdown()
                await b.shutdown()
            assert sent["fp32"] / sent["cocktail"] > 100
        finally:
            await a_host.shutdown()
            await b_host.shutdown()

    run(go())


def test_a_packed_contribution_makes_the_same_rounds_as_the_dense_delta() -> None:
    """The node sends x_i - x' gathered on the round's supports (``Contribution.round``); the same
    members with the same local models reach the same x', bit for bit, as with the dense delta,
    through compressed rounds and an exact one (whose support is every entry)."""

    async def go() -> None:
        hosts = await start_hosts(3)
        try:
            start = torch.randn(N)
            steps = [[torch.randn(N) * 0.01 for _ in hosts] for _ in range(3)]
            digests = {}
            for mode in ("dense", "packed"):
                members = [
                    await start_member(
                        h,
                        start,
                        codec=CocktailCodec(),
                        num_shards=SHARDS,
                        exact_every=3,
                        run_id=f"pack-{mode}",
                    )
                    for h in hosts
                ]
                x = [start.clone() for _ in members]
                seen = []
                for round_steps in steps:
                    x = [xi + step for xi, step in zip(x, round_steps, strict=True)]
                    contributions = []
                    for m, xi in zip(members, x, strict=True):
                        round_id = m.copy.round + 1
                        if mode == "dense":
                            contributions.append(
                                Contribution(delta=xi - m.copy.values, weight=1.0, samples=1, local_steps=1)
                            )
                        else:
                            spans = m.supports(round_id)
                            delta = gather(xi, spans) - gather(m.copy.values, spans)
                            contributions.append(
                                Contribution(
                                    delta=delta, round=round_id, weight=1.0, samples=1, local_steps=1
                                )
                            )
                    outcomes = await asyncio.gather(
                        *(m.run_round(c) for m, c in zip(members, contributions, strict=True))
                    )
                    assert all(o.status is Status.COMMITTED and not o.aborted_shards for o in outcomes)
                    x = [apply_outcome(o, xi, m.copy) for o, xi, m in zip(outcomes, x, members, strict=True)]
                    assert len({m.copy.digest for m in members}) == 1
                    seen.append((outcomes[0].codec, members[0].copy.digest))
                assert [codec for codec, _ in seen] == ["cocktail", "cocktail", "fp32"]
                digests[mode] = seen
                # A packed contribution names its round and must hold exactly that round's supports.
                m = members[0]
                spans = m.supports(m.copy.round + 1)
                size = sum(s.count for s in spans)
                stale = Contribution(
                    delta=torch.zeros(size), round=m.copy.round, weight=1.0, samples=1, local_steps=1
                )
                with pytest.raises(ValueError, match="packed for round"):
                    await m.run_round(stale)
                short = Contribution(
                    delta=torch.zeros(size - 1), round=m.copy.round + 1, weight=1.0, samples=1, local_steps=1
                )
                with pytest.raises(ValueError, match="supports hold"):
                    await m.run_round(short)
                for m in members:
                    await m.shutdown()
            assert digests["packed"] == digests["dense"]
        finally:
            for host in hosts:
                await host.shutdown()

    run(go())
