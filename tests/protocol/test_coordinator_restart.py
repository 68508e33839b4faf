"""No stored row can crash the coordinator, nor crash it again after a restart.

Before issue 29, two unauthenticated reports of 2^63 - 1 samples in one minute made the retention pass
raise ``integer overflow``; ``serve`` died, and died again after every restart because the rows stayed.
Reports are bounded now, but a record written before (or by hand) may still hold such rows: here the
SQLite file is given two of them. A real ``swarm-coordinator serve`` process must fold them (sums
saturate), go on through a retention pass that fails (another process holds the file's write lock
past the busy timeout), be SIGKILLed, and serve again on the same file.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from coordinator.client import CoordinatorClient
from coordinator.store import Store
from tests.processes import kill_groups, start_logged

RUN = "restart." + "a" * 16
START_TIMEOUT_S = 60.0


def serve(tmp_path: Path) -> tuple[object, CoordinatorClient]:
    status = tmp_path / "status.json"
    status.unlink(missing_ok=True)
    process = start_logged(
        [sys.executable, "-m", "coordinator", "serve", "--db", str(tmp_path / "c.db"), "--run", RUN,
         "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--status-file", str(status),
         "--retention-every-s", "0.2", "--raw-window-s", "60"],
        tmp_path / "coordinator.log", append=True,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not status.exists():
        assert process.poll() is None, (tmp_path / "coordinator.log").read_text()
        assert time.monotonic() < deadline, "the coordinator did not start"
        time.sleep(0.05)
    return process, CoordinatorClient(f"127.0.0.1:{json.loads(status.read_text())['grpc_port']}")


def test_rows_that_overflow_the_retention_pass_do_not_stop_the_server(tmp_path: Path) -> None:
    Store(tmp_path / "c.db").close()  # the schema
    old = time.time() - 7200  # past the raw window: the next pass folds them
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute("INSERT INTO runs (run_id, first_seen, last_seen) VALUES (?, ?, ?)", (RUN, old, old))
        for peer in ("p1", "p2"):
            db.execute(
                "INSERT INTO reports VALUES (?, ?, 1, 1, 2.0, ?, 1.0, 1, 1, 1.0, 2, ?, NULL, 'committed')",
                (RUN, peer, 2**63 - 1, old),
            )
    log = tmp_path / "coordinator.log"

    def wait_for(text: str, count: int, process) -> None:
        deadline = time.monotonic() + 30
        while log.read_text().count(text) < count:
            assert process.poll() is None, f"the coordinator died:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)

    process, client = serve(tmp_path)
    try:
        wait_for("folded 2 raw reports", 1, process)  # the rows that overflowed, folded
        assert client.run_info(RUN).run_id == RUN
        with sqlite3.connect(tmp_path / "c.db", timeout=0) as other:
            other.execute("BEGIN EXCLUSIVE")  # every write of the server now waits, then fails
            wait_for("retention pass failed", 1, process)
            other.rollback()
        assert client.run_info(RUN).run_id == RUN and process.poll() is None
    finally:
        client.close()
        kill_groups([process])
    process, client = serve(tmp_path)  # a restart on the same file, after SIGKILL
    try:
        assert client.run_info(RUN).run_id == RUN and process.poll() is None
    finally:
        client.close()
        kill_groups([process])
