"""Guard: the light commands (pull, status, pause, resume, owner-key, credential) never import torch
or hivemind, even when they fail."""

from __future__ import annotations

import json
import subprocess
import sys

DEAD = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWS49y3XXcCHCJXBqdqdeT2ouL38JSQTC9g78pT1EQFi8K"

PROBE = """
import json, sys
from node.cli import main
codes = [main(["status", "--peer", sys.argv[1], "--timeout", "3"]),
         main(["pull", "--peer", sys.argv[1], "--out", sys.argv[2], "--timeout", "3"]),
         main(["pause", "--status-file", sys.argv[2] + ".missing.json"]),
         main(["owner-key", "--out", sys.argv[2] + ".owner.key"])]
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "hivemind", "transformers", "numpy"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_the_light_commands_import_neither_torch_nor_hivemind(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, DEAD, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [2, 2, 2, 0], (
        out.stderr
    )  # an unreachable peer is a clear error, not a traceback
    assert "could not reach" in out.stderr or "did not answer" in out.stderr, out.stderr
    assert result["heavy"] == [], f"the light client imported {result['heavy']}"


COORDINATOR_PROBE = """
import json, sys, threading
from coordinator.cli import ServeConfig, serve
from pathlib import Path
stop = threading.Event()
config = ServeConfig(db=Path(sys.argv[1]) / "c.db", runs=("probe." + "a" * 16,), host="127.0.0.1", grpc_port=0, http_port=0,
                     archive=Path(sys.argv[1]) / "archive", peers=(sys.argv[2],),
                     archive_listen="/ip4/127.0.0.1/tcp/0", status_file=Path(sys.argv[1]) / "status.json")
threading.Timer(3.0, stop.set).start()
serve(config, stop)  # every module of the coordinator, the archive's py-libp2p host included
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "hivemind", "transformers"})
print(json.dumps({"heavy": heavy, "served": (Path(sys.argv[1]) / "status.json").exists()}))
"""


def test_the_coordinator_imports_neither_torch_nor_hivemind(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", COORDINATOR_PROBE, str(tmp_path), DEAD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "served": True}, out.stderr
