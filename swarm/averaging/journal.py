"""The round journal: what a member committed since its x' was last replaced, for replay.

A committed round adds ``decode_support(payload)`` to each committed shard's support (the entries
its codec's mask may change that round; the whole shard for an exact codec), in plain fp32 additions.
A member keeps those payloads (a few percent of x' per round with the cocktail codec) so that a
joiner holding x' of an earlier round (a checkpoint) can redo the same additions and end
bit-identical, instead of downloading x' itself. Entries are contiguous rounds; the oldest are
dropped beyond ``max_bytes``, and a member whose x' is replaced (repair, catch-up) starts over.
Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class JournalEntry:
    round: int
    global_step_increment: int
    samples: int
    parts: tuple[tuple[int, bytes], ...]
    """(shard, result payload) of every committed shard, in shard order."""
    digest: bytes
    """sha256 of x' after the round."""

    @property
    def size(self) -> int:
        return sum(len(payload) for _, payload in self.parts)


class RoundJournal:
    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be non-negative, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: deque[JournalEntry] = deque()
        self._bytes = 0

    @property
    def first_round(self) -> int | None:
        """The oldest round held, or None when empty."""
        return self._entries[0].round if self._entries else None

    @property
    def last_round(self) -> int | None:
        return self._entries[-1].round if self._entries else None

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def append(self, entry: JournalEntry) -> None:
        """Record a committed round; a gap (a round this member did not commit) starts over."""
        if self._entries and entry.round != self._entries[-1].round + 1:
            self.clear()
        if entry.size > self.max_bytes:  # a round larger than the whole budget: keep nothing
            self.clear()
            return
        self._entries.append(entry)
        self._bytes += entry.size
        while self._bytes > self.max_bytes:
            self._bytes -= self._entries.popleft().size

    def after(self, round: int) -> list[JournalEntry] | None:
        """Every round after ``round``, or None if the journal does not reach back to ``round + 1``.

        An empty list means nothing newer than ``round`` is held (the requester is up to date, as
        far as this member knows).
        """
        if not self._entries:
            return []
        first, last = self._entries[0].round, self._entries[-1].round
        if round >= last:
            return []
        if round + 1 < first:
            return None
        return list(self._entries)[round + 1 - first :]
