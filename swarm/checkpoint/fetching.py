"""One provider's download worker, on either event loop: claim chunks, fetch them, deliver them.

The node's downloader (``swarm.checkpoint.service``: asyncio, p2pd) and the light client's
(``swarm.light.client``: trio, py-libp2p) run one ``provider_worker`` per provider around the same
``Downloader`` core. What differs is given as a ``ChunkTransport``: how chunks are requested (and
within what time), how an idle worker waits for news, how a chunk is written. The worker awaits only
those, so it runs on either loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Protocol

from swarm.checkpoint.download import Downloader, DownloadError, Verdict
from swarm.checkpoint.manifest import Chunk

OnChunk = Callable[[int, bytes], Awaitable[bool]]
"""``await on_chunk(index, data)``: False when the fetch must stop (the provider sent bad bytes)."""


class ChunkTransport(Protocol):
    async def fetch(self, provider: Hashable, indices: Sequence[int], on_chunk: OnChunk) -> None:
        """Ask ``provider`` for the chunks ``indices`` and pass each one to ``on_chunk`` as it
        arrives, until all came or ``on_chunk`` says stop; raise when the provider fails."""
        ...

    async def wait_for_news(self) -> None:
        """Wait, bounded, until some worker delivered or failed (``news``)."""
        ...

    def news(self) -> None:
        """A worker's fetch ended: wake the idle ones."""
        ...

    async def write(self, chunk: Chunk, data: bytes) -> None: ...


async def provider_worker(
    core: Downloader,
    provider: Hashable,
    transport: ChunkTransport,
    *,
    on_accepted: Callable[[], None] | None = None,
    on_corrupt: Callable[[Hashable, int], None] | None = None,
    on_failed: Callable[[Hashable, Exception], None] | None = None,
) -> None:
    """Fetch from ``provider`` until the download is done, it has nothing more to offer, it sent a
    corrupt chunk (``on_corrupt``) or it failed (``on_failed``; its claimed chunks go back)."""
    while not core.done:
        try:
            claimed = core.claim(provider)
        except DownloadError:
            return
        if not claimed:
            if provider not in core.usable_providers:
                return
            await transport.wait_for_news()
            continue
        try:
            corrupt = await _fetch(core, provider, transport, [c.index for c in claimed], on_accepted)
        # The boundary of one provider's worker: gone, timed out, refused, malformed, or a failure
        # of the stack's dial (of many types): that provider is done, the others go on.
        except Exception as e:
            if on_failed is not None:
                on_failed(provider, e)
            core.provider_failed(provider)
            return
        finally:
            transport.news()
        if corrupt is not None:
            if on_corrupt is not None:
                on_corrupt(provider, corrupt)
            return


async def _fetch(
    core: Downloader,
    provider: Hashable,
    transport: ChunkTransport,
    indices: Sequence[int],
    on_accepted: Callable[[], None] | None,
) -> int | None:
    """One request's chunks delivered to ``core`` and written; the index of a corrupt one, if any
    (the fetch stops there)."""
    corrupt: list[int] = []

    async def on_chunk(index: int, data: bytes) -> bool:
        verdict = core.deliver(provider, index, data)
        if verdict is Verdict.CORRUPT:
            corrupt.append(index)
            return False
        if verdict is Verdict.ACCEPTED:
            await transport.write(core.chunks[index], data)
            if on_accepted is not None:
                on_accepted()
        return True

    await transport.fetch(provider, indices, on_chunk)
    return corrupt[0] if corrupt else None


def check_complete(core: Downloader) -> None:
    """After every worker stopped: raise DownloadError unless every chunk arrived."""
    core.check_progress_possible()
    if not core.done:
        raise DownloadError(f"{len(core.missing)} chunks missing after every provider stopped")
