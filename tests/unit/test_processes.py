"""tests/processes.py: a started process logs to its file, killing its group ends its children, and a
lab that fails half way is closed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.processes import create_or_close, kill_groups, start_logged

GONE_TIMEOUT_S = 10.0
"""How long a SIGKILLed process may take to leave the process table (or turn zombie) under load."""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_output_goes_to_the_log_and_append_keeps_what_was_there(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    assert start_logged([sys.executable, "-c", "print('first')"], log).wait(timeout=60) == 0
    assert (
        start_logged([sys.executable, "-c", "import sys; sys.exit('second')"], log, append=True).wait(60) == 1
    )
    assert log.read_text().split() == ["first", "second"]


def test_killing_the_group_ends_the_children_a_finished_leader_left_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    leader = start_logged(["sh", "-c", f"sleep 600 & echo $! > {pid_file}"], tmp_path / "leader.log")
    assert leader.wait(timeout=60) == 0
    child = int(pid_file.read_text())
    assert _running(child)
    kill_groups([leader])
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)


def test_a_lab_that_fails_half_way_is_closed_and_the_error_goes_on() -> None:
    made: list[str] = []

    def create() -> None:
        made.append("namespace")
        raise OSError("no tc here")

    with pytest.raises(OSError, match="no tc here"):
        create_or_close(create, made.clear)
    assert made == []
    create_or_close(lambda: made.append("namespace"), made.clear)
    assert made == ["namespace"]
