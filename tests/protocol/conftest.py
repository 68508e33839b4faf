"""Fixtures of the protocol tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocol.coordinator_support import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "coordinator.db")
    try:
        yield s
    finally:
        s.close()
