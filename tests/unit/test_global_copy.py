"""x's digest hashed on a worker thread: the same sha256, and never of a half-written x'."""

from __future__ import annotations

import asyncio
import hashlib

import torch

from swarm.averaging.state import GlobalCopy


def _sha(values: torch.Tensor) -> bytes:
    return hashlib.sha256(values.numpy().tobytes()).digest()


def test_the_background_digest_is_the_sha256_of_x_prime() -> None:
    copy = GlobalCopy(torch.randn(3_000_001))
    copy.hash_in_background()
    assert copy.digest == _sha(copy.values)
    assert copy.hash_cpu_s > 0


def test_a_change_waits_for_the_hash_in_flight_and_the_next_digest_sees_it() -> None:
    """apply_shard and replace first let the worker finish reading x'; the digest read afterwards
    is of the changed x', whether it is read on the loop, awaited, or looked up."""
    copy = GlobalCopy(torch.zeros(2_000_000))
    before = copy.values.clone()
    copy.hash_in_background()
    copy.apply_shard(5, torch.ones(10), stride=3)  # while (or after) the worker hashes
    assert copy.known_digest is None
    changed = copy.values.clone()
    assert not torch.equal(changed, before)
    assert copy.digest == _sha(changed)

    copy.hash_in_background()  # nothing to hash: the digest is known
    assert copy.known_digest == _sha(changed)
    copy.apply_shard(0, torch.ones(1))
    copy.hash_in_background()
    copy.replace(before, round=7, global_step=70, swarm_samples=700)
    assert asyncio.run(copy.digest_async()) == _sha(before)
    assert copy.round == 7


def test_digest_async_leaves_the_event_loop_free_while_it_hashes() -> None:
    copy = GlobalCopy(torch.randn(20_000_000))

    async def go() -> tuple[bytes, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        digest = await copy.digest_async()
        ticker.cancel()
        return digest, ticks

    digest, ticks = asyncio.run(go())
    assert ticks > 1, "the loop ran other tasks while x' was hashed"
    assert digest == _sha(copy.values)
