"""The downloader's core: which chunk to ask which provider for, and what to make of what comes back.

No I/O of its own (sans-I/O): the adapters (hivemind's P2P inside nodes, py-libp2p in the light
client) run one worker per provider (``swarm.checkpoint.fetching``) that loops ``claim`` -> fetch ->
``deliver`` / ``provider_failed`` and writes each accepted chunk where it belongs. Rules:

- every chunk's sha256 is checked; a provider that sends a wrong chunk is dropped for the rest of
  the download and the chunk goes back to the queue for the others;
- a provider that fails (left, timed out, refused) gives its claimed chunks back;
- chunks already on disk (a resumed download) are never asked for;
- once nothing is left unclaimed, idle providers duplicate chunks still in flight elsewhere (the
  endgame), so one slow provider cannot hold the download back.

Pure: imports no torch, asyncio or libp2p.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from swarm.checkpoint.manifest import Chunk, Manifest


class Verdict(Enum):
    ACCEPTED = "accepted"
    """A new, verified chunk: write it."""
    DUPLICATE = "duplicate"
    """Verified, but another provider's copy arrived first: nothing to write."""
    CORRUPT = "corrupt"
    """Wrong bytes: the provider is dropped, the chunk is asked of another."""
    UNEXPECTED = "unexpected"
    """A chunk this provider was not asked for (or a dropped provider): ignored."""


class DownloadError(RuntimeError):
    """No provider is left that could send the chunks still missing."""


@dataclass
class _ProviderState:
    claimed: set[int] = field(default_factory=set)
    received_bytes: int = 0
    bad: bool = False
    failed: bool = False


class Downloader:
    """State of one checkpoint download over several providers."""

    def __init__(self, manifest: Manifest, *, have: Iterable[int] = (), batch_chunks: int = 4):
        self.manifest = manifest
        self.chunks: list[Chunk] = manifest.chunks()
        self.batch_chunks = batch_chunks
        self.have: set[int] = set(have)
        self.resumed_chunks = len(self.have)
        self._providers: dict[Hashable, _ProviderState] = {}

    # --- providers ----------------------------------------------------------------------------

    def add_provider(self, provider: Hashable) -> None:
        self._providers.setdefault(provider, _ProviderState())

    @property
    def usable_providers(self) -> list[Hashable]:
        return [p for p, s in self._providers.items() if not (s.bad or s.failed)]

    @property
    def bad_providers(self) -> list[Hashable]:
        return [p for p, s in self._providers.items() if s.bad]

    def provider_failed(self, provider: Hashable) -> None:
        """The provider could not send (gone, timed out, refused): its claims go back to the queue."""
        state = self._providers[provider]
        state.failed = True
        state.claimed.clear()

    def received_bytes(self, provider: Hashable) -> int:
        return self._providers[provider].received_bytes

    # --- progress -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return len(self.have) == len(self.chunks)

    @property
    def missing(self) -> list[int]:
        return [c.index for c in self.chunks if c.index not in self.have]

    @property
    def have_bytes(self) -> int:
        return sum(self.chunks[i].size for i in self.have)

    # --- the loop -----------------------------------------------------------------------------

    def claim(self, provider: Hashable) -> list[Chunk]:
        """Up to ``batch_chunks`` chunks for ``provider`` to send next; empty when it has nothing to do.

        Raises DownloadError when chunks are missing and no usable provider remains.
        """
        state = self._providers[provider]
        if state.bad or state.failed or self.done:
            if not self.done and not self.usable_providers:
                raise DownloadError(self._no_provider_message())
            return []
        in_flight = {i for s in self._providers.values() if not (s.bad or s.failed) for i in s.claimed}
        wanted = [i for i in self.missing if i not in in_flight]
        if not wanted:  # endgame: duplicate what others still have in flight
            wanted = [i for i in self.missing if i not in state.claimed]
        picked = wanted[: self.batch_chunks]
        state.claimed.update(picked)
        return [self.chunks[i] for i in picked]

    def deliver(self, provider: Hashable, index: int, data: bytes) -> Verdict:
        state = self._providers.get(provider)
        if state is None or state.bad or index not in state.claimed:
            return Verdict.UNEXPECTED
        state.claimed.discard(index)
        chunk = self.chunks[index]
        if len(data) != chunk.size or hashlib.sha256(data).hexdigest() != chunk.sha256:
            state.bad = True
            state.claimed.clear()
            return Verdict.CORRUPT
        state.received_bytes += len(data)
        if index in self.have:
            return Verdict.DUPLICATE
        self.have.add(index)
        return Verdict.ACCEPTED

    def check_progress_possible(self) -> None:
        if not self.done and not self.usable_providers:
            raise DownloadError(self._no_provider_message())

    def _no_provider_message(self) -> str:
        bad = len(self.bad_providers)
        return (
            f"{len(self.missing)} of {len(self.chunks)} chunks still missing and no provider left"
            f" ({bad} sent corrupt data, {len(self._providers) - bad} failed or left)"
        )
