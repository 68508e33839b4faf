"""The round journal: contiguous rounds, a byte budget, and what it can answer."""

from __future__ import annotations

import pytest

from swarm.averaging.journal import JournalEntry, RoundJournal


def _entry(round_id: int, size: int = 10) -> JournalEntry:
    return JournalEntry(
        round=round_id, global_step_increment=1, samples=4, parts=((0, b"x" * size),), digest=bytes(32)
    )


def test_it_answers_every_round_after_one_it_reaches_back_to() -> None:
    journal = RoundJournal(max_bytes=1000)
    for r in range(5, 9):
        journal.append(_entry(r))
    assert [e.round for e in journal.after(4) or []] == [5, 6, 7, 8]
    assert [e.round for e in journal.after(6) or []] == [7, 8]
    assert journal.after(8) == [] and journal.after(20) == []
    assert journal.after(3) is None, "round 4 is not held: the journal cannot lead from round 3"


def test_a_gap_starts_over_and_the_budget_drops_the_oldest_rounds() -> None:
    journal = RoundJournal(max_bytes=35)
    for r in (1, 2, 3):
        journal.append(_entry(r))
    journal.append(_entry(4))
    assert (journal.first_round, journal.last_round, journal.size_bytes) == (2, 4, 30)
    journal.append(_entry(6))  # round 5 was missed: what came before no longer leads here
    assert (journal.first_round, journal.last_round, len(journal)) == (6, 6, 1)
    journal.append(_entry(7, size=100))  # larger than the budget on its own
    assert len(journal) == 0 and journal.size_bytes == 0
    with pytest.raises(ValueError):
        RoundJournal(max_bytes=-1)
