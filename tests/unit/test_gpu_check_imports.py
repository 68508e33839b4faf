"""Guard: what ``benchmarks/gpu_check.sh`` runs imports neither hivemind nor the P2P and RPC stacks.

The GPU machines this check is meant for carry a CUDA build of torch (and Triton) but none of the
swarm's networking packages, so the trainer, the codec, the models and the global copy must load
with torch and numpy alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
sys.path.insert(0, "benchmarks")
import codec  # the codec benchmark, as gpu_check.sh runs it
import member_round  # the member-side benchmark, likewise
import tests.gpu.test_cuda
networking = {"hivemind", "libp2p", "grpc", "pydantic", "multiaddr", "prometheus_client"}
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & networking)))
"""


def test_the_gpu_check_loads_without_the_networking_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
