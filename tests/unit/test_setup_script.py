"""scripts/setup.sh installs what a user needs: run for real on a copy of the repository whose
``.venv/bin/python`` records the commands it is given instead of running pip (no network here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RECORDER = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
case "$*" in --version) echo "Python 3.11";; *print*) echo "2.13.0";; esac
exit 0
"""
"""A stand-in interpreter: every ``-c`` check passes (torch present, a CPU build), pip does nothing; CC=cat passes the
compiler check."""


def _install_line(tmp_path: Path, *args: str) -> str:
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDER)
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "CC": "cat"}
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh"), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    installs = [line for line in (python.parent / "calls.log").read_text().splitlines() if " -e " in line]
    assert len(installs) == 1, installs
    return installs[0]


@pytest.mark.parametrize(("args", "extras"), [((), "[parquet]"), (("--dev",), "[dev,parquet]")])
def test_setup_installs_the_parquet_extra(tmp_path: Path, args: tuple[str, ...], extras: str) -> None:
    """``--data`` reads Parquet with pyarrow: the parquet extra comes with a plain setup and with --dev."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all(extra in declared for extra in extras.strip("[]").split(","))
    assert f"-e .{extras}" in _install_line(tmp_path, *args)
