"""Printing help loads none of the heavy stacks: ``--help`` answers in well under a second.

Each command runs as a real process under ``python -X importtime``, which lists on stderr every
module the process imported; none may belong to torch, hivemind, transformers or triton.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {"torch", "hivemind", "transformers", "triton", "numpy", "grpc"}


def _imported(*args: str) -> tuple[str, set[str]]:
    """What ``python -m ARGS`` prints, and the top-level packages it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    packages = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "argparse" in packages, "no import list on stderr: is -X importtime honoured?"
    return result.stdout, packages


@pytest.mark.parametrize(
    "command",
    [("node", "--help"), ("node", "join", "--help"), ("node", "demo", "--help"), ("coordinator", "--help")],
    ids=" ".join,
)
def test_help_imports_no_heavy_stack(command: tuple[str, ...]) -> None:
    printed, packages = _imported(*command)
    assert "usage:" in printed
    assert packages & HEAVY == set()


def test_coordinator_help_is_plain_text() -> None:
    """No reStructuredText markup from docstrings leaks into what a user reads."""
    for command in (("coordinator", "--help"), ("coordinator", "serve", "--help")):
        printed, _ = _imported(*command)
        assert "``" not in printed, printed
