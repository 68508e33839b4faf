"""A mistake in how a node is started is one line on stderr and exit status 2, before any training.

Each case is a real ``python -m node join`` process with one thing wrong: a malformed peer address,
an unknown model, missing or unreadable data, a port in use (also one listen address of several),
CUDA asked for where there is none, a model too small for the data, settings that contradict the
running swarm's, a run id pinned to another peer's key, a run name the --peer does not train. The
processes run a few
at a time from one module-wide set-up (they spend their seconds importing torch and hivemind); each
test then reads one outcome: the exit status, stderr, and no traceback anywhere.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.processes import kill_groups
from tests.swarm.conftest import Swarm
from tests.unit.test_models import model_folder

pytestmark = pytest.mark.swarm

USAGE_ERROR_TIMEOUT_S = 90.0
"""Bound on one failing process: it should stop within seconds of importing torch and hivemind."""
AT_ONCE = 3
"""Failing processes run at the same time: enough to overlap their imports on CI's two cores."""
MALFORMED_PEER = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWS49y3XXcCHCJX"  # a peer id cut short
TINY_LLAMA = dict(
    model_type="llama",
    vocab_size=256,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=1024,
)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    named: tuple[str, ...]
    """What the one line on stderr must contain (the port, the model, the path, ...)."""


def _join(args: tuple[str, ...]) -> Outcome:
    """Run ``swarm-node join ARGS`` to its end (its whole process group is killed afterwards)."""
    command = [sys.executable, "-m", "node", "join", "--ephemeral", "--threads", "1", *args]
    if "--host-maddr" not in args:  # p2pd starts when any one of its addresses works
        command += ["--host-maddr", "/ip4/127.0.0.1/tcp/0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=USAGE_ERROR_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_groups([process])
        stdout, stderr = process.communicate()
        return Outcome(-1, stdout, f"did not stop within {USAGE_ERROR_TIMEOUT_S:.0f} s\n{stderr}")
    finally:
        kill_groups([process])
    return Outcome(process.returncode, stdout, stderr)


def _model_folder(path: Path, **overrides: int) -> str:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**TINY_LLAMA, **overrides}))
    return str(path)


def _taken_port() -> socket.socket:
    """A listening TCP socket holding a port on every interface, so that a node cannot bind it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    return sock


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Case, Outcome]]]:
    work = tmp_path_factory.mktemp("usage")
    (work / "data.bin").write_bytes(b"\x00\x01")
    records, empty = work / "records.jsonl", work / "empty.jsonl"
    records.write_text("".join(json.dumps({"body": f"document {i}"}) + "\n" for i in range(10)))
    empty.write_text("")
    metrics, listen = _taken_port(), _taken_port()
    metrics_port, listen_port = metrics.getsockname()[1], listen.getsockname()[1]
    cases = {
        "malformed peer": Case(("--peer", MALFORMED_PEER), ("malformed", MALFORMED_PEER)),
        "unknown model": Case(("--model", "no-such-model"), ("no-such-model",)),
        "missing data": Case(("--data", str(work / "absent")), (str(work / "absent"), "no such file")),
        "unreadable data": Case(("--data", str(work / "data.bin")), (str(work / "data.bin"), "unsupported")),
        "metrics port in use": Case(
            ("--metrics-port", str(metrics_port)), (f"port {metrics_port} is in use",)
        ),
        "listen port in use": Case(
            ("--host-maddr", f"/ip4/127.0.0.1/tcp/{listen_port}"), (f"port {listen_port} is in use",)
        ),
        # p2pd itself starts when any one of its addresses works: the node checks the others.
        "one listen port of two in use": Case(
            ("--host-maddr", f"/ip4/127.0.0.1/tcp/{listen_port}", "--host-maddr", "/ip4/127.0.0.1/tcp/0"),
            (f"--host-maddr /ip4/127.0.0.1/tcp/{listen_port}", f"port {listen_port} is in use"),
        ),
        "vocabulary smaller than the tokenizer's": Case(
            ("--model", str(model_folder(work / "small-vocab", vocab_size=100, weights=False))),
            ("vocabulary of 100", "400 of its tokenizer"),
        ),
        "a data field that does not exist": Case(
            ("--data", str(records), "--data-field", "content"), ("no field 'content'", "fields: 'body'")
        ),
        "an empty data set": Case(("--data", str(empty)), ("the data set is empty",)),
        "a tokenizer missing from the folder": Case(
            ("--model", _model_folder(work / "no-tokenizer", vocab_size=100)), ("has no tokenizer files",)
        ),
        # A full run id pins its creator's key: only that key may start (or restart) it alone.
        "another peer's run": Case(
            ("--run-id", "usage.aaaaaaaaaaaaaaaa"), ("'usage.aaaaaaaaaaaaaaaa'", "started by another peer")
        ),
        "positions too few": Case(
            ("--model", _model_folder(work / "short", max_position_embeddings=64), "--seq-len", "128"),
            ("64 positions", "128"),
        ),
    }
    if not torch.cuda.is_available():
        cases["cuda without CUDA"] = Case(("--device", "cuda"), ("--device cuda", "no CUDA"))
    swarm = Swarm(work)
    try:
        first = swarm.start("first", "--run-id", "usage", "--local-steps", "1", "--min-group", "2")
        with ThreadPoolExecutor(AT_ONCE) as pool:
            running = {name: pool.submit(_join, case.args) for name, case in cases.items()}
            contradicting = Case(
                ("--run-id", "usage", "--peer", swarm.first_maddr(first), "--seq-len", "64"),
                ("contradict", "--seq-len: this node has 64, the run has 128"),
            )
            cases["contradicting the run"] = contradicting
            running["contradicting the run"] = pool.submit(_join, contradicting.args)
            elsewhere = Case(
                ("--run-id", "other", "--peer", swarm.first_maddr(first)),
                ("no peer trains a run named 'other'", "trains 'usage."),
            )
            cases["a run the peer does not train"] = elsewhere
            running["a run the peer does not train"] = pool.submit(_join, elsewhere.args)
            results = {name: (cases[name], future.result()) for name, future in running.items()}
        yield results
    finally:
        swarm.reap()
        metrics.close()
        listen.close()


CASES = [
    "malformed peer",
    "unknown model",
    "missing data",
    "unreadable data",
    "metrics port in use",
    "listen port in use",
    "one listen port of two in use",
    "vocabulary smaller than the tokenizer's",
    "a tokenizer missing from the folder",
    "a data field that does not exist",
    "an empty data set",
    "positions too few",
    "cuda without CUDA",
    "contradicting the run",
    "another peer's run",
    "a run the peer does not train",
]


@pytest.mark.parametrize("name", CASES)
def test_a_usage_error_is_one_line_on_stderr_and_exit_2(outcomes, name: str) -> None:
    if name not in outcomes:
        pytest.skip("CUDA is available here: --device cuda is no mistake")
    case, outcome = outcomes[name]
    shown = f"exit {outcome.returncode}\nstdout:\n{outcome.stdout[-3000:]}\nstderr:\n{outcome.stderr[-3000:]}"
    assert outcome.returncode == 2, shown
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("swarm-node: error: "), shown
    for part in case.named:
        assert part in lines[0], shown
    assert "Traceback" not in outcome.stdout + outcome.stderr, shown


@pytest.mark.parametrize(
    "args", [("--model", "no-such-model"), ("--lr", "5")], ids=["at start", "in the config"]
)
def test_verbose_shows_the_traceback_of_a_usage_error(args: tuple[str, ...]) -> None:
    outcome = _join((*args, "--verbose"))
    assert outcome.returncode == 2, outcome
    assert "Traceback (most recent call last)" in outcome.stderr, outcome
    assert outcome.stderr.splitlines()[-1].startswith("swarm-node: error: "), outcome
