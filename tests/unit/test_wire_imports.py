"""Guard: the framing core imports no networking stack, and each adapter only its own (hivemind and
py-libp2p cannot share one process: both register the protobuf package ``crypto.pb``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import {module}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & {{"hivemind", "libp2p", "trio", "torch", "asyncio"}})))
"""


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("swarm.wire.frames", set()),
        ("swarm.checkpoint.wire", set()),
        ("swarm.checkpoint.serve", set()),
        ("swarm.wire.asyncio_streams", {"asyncio"}),
        ("swarm.wire.trio_streams", set()),  # py-libp2p itself is imported when a stream is framed
        ("swarm.light.client", set()),
    ],
)
def test_framing_modules_import_only_their_own_stack(module: str, allowed: set[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip()))
    assert imported <= allowed, f"{module} imported {sorted(imported - allowed)}"
