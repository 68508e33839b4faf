"""The round protocol's roles depend on a host protocol and a clock, not on a libp2p stack.

A simulator runs them over an in-memory host; importing them must not pull in hivemind (or
swarm.p2p, which wraps it).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_round_protocol_imports_no_libp2p_stack() -> None:
    code = (
        "import sys, swarm.averaging.round, swarm.clock;"
        "print(sorted(m for m in sys.modules if m.startswith(('swarm.p2p', 'hivemind', 'libp2p'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
