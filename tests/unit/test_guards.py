"""Import boundaries: `import swarm` is side-effect free and pulls in no networking stack."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, threading
before = threading.active_count()
import swarm, swarm.compression, swarm.averaging.shards, swarm.averaging.reduce, swarm.dht.records
import swarm.data, swarm.averaging.state, swarm.averaging.timing
assert threading.active_count() == before, "importing swarm started a thread"
for banned in ("grpc", "hivemind", "libp2p", "prometheus_client"):
    assert banned not in sys.modules, banned + " was imported"
import torch
assert not torch.cuda.is_initialized(), "CUDA was initialised at import"
print("ok")
"""


def _printed_by(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (it must succeed): imports made here do not count."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_core_has_no_side_effects() -> None:
    assert _printed_by(CHECK) == "ok"


def test_the_pure_centre_imports_no_protocol_code() -> None:
    code = (
        "import sys; import swarm.compression, swarm.averaging.reduce, swarm.averaging.shards;"
        "print(sorted(m for m in sys.modules if m.startswith(('swarm.p2p', 'swarm.relay', 'swarm.averaging.round',"
        " 'swarm.wire.asyncio_streams', 'swarm.wire.trio_streams', 'hivemind', 'trio',"
        " 'libp2p'))))"
    )
    assert _printed_by(code) == "[]"


def test_the_node_process_never_loads_py_libp2p() -> None:
    """hivemind and py-libp2p both register the protobuf package ``crypto.pb``: one process, one of them."""
    code = (
        "import sys; import node.runner, swarm.checkpoint.service;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'libp2p', 'trio', 'multiaddr'}))"
    )
    assert _printed_by(code) == "[]"
