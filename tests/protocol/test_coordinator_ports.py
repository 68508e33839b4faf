"""A coordinator started on a port that another process holds stops at once: one line on stderr that
names the port and its flag, exit status 2 (the systemd unit does not restart on it), no traceback.
Each case is a real ``python -m coordinator serve`` against a socket this test holds, listening.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import kill_groups

START_TIMEOUT_S = 60.0
"""Bound on the coordinator's start and stop: it imports grpc and SQLite, no torch."""


@pytest.fixture(params=[False, True], ids=["plain", "reuseport"])
def held_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port another process listens on; "reuseport": one that set SO_REUSEPORT, as gRPC's own
    listener (another coordinator) does, and that a second gRPC server would otherwise share."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if request.param:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port"])
def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, held_port: int, flag: str) -> None:
    ports = {"--grpc-port": "0", "--http-port": "0", flag: str(held_port)}
    command = [sys.executable, "-m", "coordinator", "serve", "--db", str(tmp_path / "c.db"),
               "--run", "ports." + "a" * 16, "--host", "127.0.0.1", *(part for item in ports.items() for part in item),
               "--status-file", str(tmp_path / "status.json")]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_groups([process])
        pytest.fail(f"the coordinator did not stop: {process.communicate()}")
    finally:
        kill_groups([process])
    shown = f"exit {process.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert process.returncode == 2, shown
    assert stderr.splitlines() == [f"swarm-coordinator: error: port {held_port} is in use ({flag})"], shown
    assert not (tmp_path / "status.json").exists(), shown
