"""``swarm-node demo``: a local swarm of N node processes on loopback, with one progress bar.

The first node starts the run; the others join it with ``--peer``. Every node is a separate
process in its own process group (its DHT process and p2pd die with it), writes a status file the
demo reads for the progress bar, and a summary JSON the demo prints at the end. A coordinator runs
alongside (``--no-coordinator`` to skip it): the nodes report to it, and its dashboard's URL is
printed at the start; its record stays in the work folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

START_TIMEOUT_S = 180.0
"""How long the coordinator and then the first node may take to write their status files: a cold
start imports torch and transformers and starts p2pd and the DHT."""
STATUS_POLL_S = 0.1
"""How often a starting process's status file is read."""
REFRESH_S = 0.5
"""How often the progress bar reads the nodes' status files."""
STOP_TIMEOUT_S = 30.0
"""How long a node or the coordinator may take to stop after SIGTERM before it is killed."""


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    nodes: int = 3
    steps: int = 150
    model: str = "tiny"
    codec: str = "fp32"
    round_period_s: float = 4.0
    workdir: str | None = None
    coordinator: bool = True
    devices: tuple[str, ...] = ()
    """Each node's ``--device``, in turn (``("cuda", "cpu")``: a GPU and a CPU member); empty: auto."""
    until_round: int | None = None
    """Stop every node once x' reaches this round (the same round everywhere) instead of after ``steps``."""
    overlap: bool = True
    """Each round's exchange runs while the next round trains (the nodes' default); False: ``--no-overlap``."""

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 32:
            raise ValueError(f"--nodes must be between 1 and 32, got {self.nodes}")
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if self.until_round is not None and self.until_round < 1:
            raise ValueError(f"--until-round must be at least 1, got {self.until_round}")
        if bad := [d for d in self.devices if d not in ("auto", "cpu", "cuda")]:
            raise ValueError(f"--devices takes auto, cpu or cuda, separated by commas; got {','.join(bad)!r}")

    def device(self, index: int) -> str | None:
        return self.devices[index % len(self.devices)] if self.devices else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_for_status(
    path: Path,
    process: subprocess.Popen,
    deadline: float,
    ready: Callable[[dict[str, Any]], bool] = lambda status: True,
) -> dict[str, Any] | None:
    """The status ``process`` writes to ``path``, once it is ``ready``; None when the process exits
    first or the (monotonic) ``deadline`` passes."""
    while (status := _read_json(path)) is None or not ready(status):
        if process.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(STATUS_POLL_S)
    return status


def _wait_or_kill(process: subprocess.Popen) -> None:
    """Wait for a process told to stop; kill its process group when it takes too long."""
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def node_command(
    options: DemoOptions, workdir: Path, index: int, peer: str | None, run_id: str, coordinator: str | None
) -> list[str]:
    """The command line of node ``index``: with no ``peer`` it starts the run, else it joins ``peer``."""
    command = [
        sys.executable,
        "-m",
        "node",
        "join",
        "--run-id",
        run_id,
        "--host-maddr",
        "/ip4/127.0.0.1/tcp/0",
        *(
            ["--max-steps", str(options.steps)]
            if options.until_round is None
            else ["--until-round", str(options.until_round)]
        ),
        "--round-period",
        str(options.round_period_s),
        "--threads",
        "1",
        "--status-file",
        str(workdir / f"node{index}.status.json"),
        "--summary-json",
        str(workdir / f"node{index}.summary.json"),
        "--identity",
        str(workdir / f"node{index}.key"),
        "--ephemeral",  # a throwaway local swarm: nothing kept in the user's data folder
    ]
    if coordinator is not None:
        command += ["--coordinator", coordinator, "--metrics-port", "0"]
    if (device := options.device(index)) is not None:
        command += ["--device", device]
    if not options.overlap:
        command.append("--no-overlap")
    if peer is None:
        command += ["--model", options.model, "--codec", options.codec]
    else:
        command += ["--peer", peer]
    return command


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def run_demo(options: DemoOptions) -> int:
    workdir = Path(options.workdir) if options.workdir else Path(tempfile.mkdtemp(prefix="swarm-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("node*.json"):
        stale.unlink()
    run_id = f"demo-{os.getpid()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen] = []
    logs = [workdir / f"node{i}.log" for i in range(options.nodes)]

    def launch(index: int, peer: str | None) -> None:
        with open(logs[index], "w") as log:
            processes.append(
                subprocess.Popen(
                    node_command(options, workdir, index, peer, run_id, coordinator),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            )

    print(
        f"swarm-node demo: {options.nodes} nodes, "
        f"{f'{options.steps} steps each' if options.until_round is None else f'until round {options.until_round}'}, "
        f"model {options.model}, "
        f"codec {options.codec}{', devices ' + ','.join(options.devices) if options.devices else ''};"
        f" logs in {workdir}",
        flush=True,
    )
    started = time.monotonic()
    coordinator: str | None = None
    service: subprocess.Popen | None = None
    try:
        if options.coordinator:
            try:
                service, coordinator = _start_coordinator(workdir, env, _served_run(workdir, run_id))
            except RuntimeError as e:
                print(e, file=sys.stderr)
                return 1
        launch(0, None)
        status = _wait_for_status(
            workdir / "node0.status.json",
            processes[0],
            started + START_TIMEOUT_S,
            lambda s: bool(s.get("maddrs")),
        )
        if status is None:
            if processes[0].poll() is not None:
                print(
                    f"the first node exited with code {processes[0].returncode}:\n{_tail(logs[0])}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"the first node did not start within {START_TIMEOUT_S:.0f}s:\n{_tail(logs[0])}",
                    file=sys.stderr,
                )
            return 1
        peer = status["maddrs"][0]
        for index in range(1, options.nodes):
            launch(index, peer)
        _follow(options, workdir, processes)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the nodes", file=sys.stderr)
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            _wait_or_kill(process)
        return 130
    finally:
        for process in processes:  # leave nothing behind, whatever happened
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        if service is not None and service.poll() is None:
            service.terminate()  # graceful: its record is complete on disk
            _wait_or_kill(service)
    code = _report(options, workdir, processes, logs, time.monotonic() - started)
    if service is not None:
        print(
            f"the coordinator's record: {workdir / 'coordinator.db'} (browse it again with"
            f" `swarm-coordinator serve --db {workdir / 'coordinator.db'} --run {_served_run(workdir, run_id)}`)"
        )
    return code


def _served_run(workdir: Path, name: str) -> str:
    """The pinned id the first node will give run ``name``: its key is made here, before the
    coordinator starts, so that the coordinator can be told which run it serves."""
    from swarm.dht.records import pinned_run_id
    from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf

    path = workdir / "node0.key"
    if not path.exists():
        generate_identity(path)
    key = load_identity(path)
    if key is None:
        raise RuntimeError(f"{path} is not an Ed25519 key: remove it to have a new one made")
    return pinned_run_id(name, peer_id_of(public_key_protobuf(key.public_key())))


def _start_coordinator(workdir: Path, env: dict[str, str], run: str) -> tuple[subprocess.Popen, str]:
    """Start ``swarm-coordinator serve`` for ``run`` on free loopback ports; returns it and its gRPC
    address."""
    status = workdir / "coordinator.status.json"
    status.unlink(missing_ok=True)
    with open(workdir / "coordinator.log", "w") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--db", str(workdir / "coordinator.db"),
             "--run", run, "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0",
             "--status-file", str(status)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
    ports = _wait_for_status(status, service, time.monotonic() + START_TIMEOUT_S)
    if ports is None:
        raise RuntimeError(f"the coordinator did not start:\n{_tail(workdir / 'coordinator.log')}")
    print(
        f"dashboard: http://127.0.0.1:{ports['http_port']}/  (the coordinator's record of this run)",
        flush=True,
    )
    return service, f"127.0.0.1:{ports['grpc_port']}"


def _follow(options: DemoOptions, workdir: Path, processes: list[subprocess.Popen]) -> None:
    by_rounds = options.until_round is not None
    total = options.until_round if options.until_round is not None else options.nodes * options.steps
    with tqdm(total=total, unit="round" if by_rounds else "step", dynamic_ncols=True, desc="training") as bar:
        while any(p.poll() is None for p in processes):
            statuses = [_read_json(workdir / f"node{i}.status.json") or {} for i in range(options.nodes)]
            steps = sum(s.get("step", 0) for s in statuses)
            losses = [s["loss"] for s in statuses if s.get("loss") is not None]
            evals = [s["eval_loss"] for s in statuses if s.get("eval_loss") is not None]
            round_id = max((s.get("round", 0) for s in statuses), default=0)
            bar.n = min(round_id if by_rounds else steps, total)
            bar.set_postfix(
                loss=f"{sum(losses) / len(losses):.3f}" if losses else "-",
                eval=f"{min(evals):.3f}" if evals else "-",
                round=round_id,
                peers=sum(1 for s in statuses if s.get("state") == "training"),
                sent=f"{sum(s.get('bytes_sent', 0) for s in statuses) / 1e6:.1f}MB",
                refresh=False,
            )
            bar.refresh()
            time.sleep(REFRESH_S)


def _report(
    options: DemoOptions, workdir: Path, processes: list[subprocess.Popen], logs: list[Path], elapsed_s: float
) -> int:
    failed = False
    print(
        f"\n{'node':<5} {'exit':>4} {'steps':>6} {'rounds':>6} {'round':>6} {'eval loss':>9} {'sent MB':>8}  digest of x'"
    )
    summaries = []
    for index, process in enumerate(processes):
        summary = _read_json(workdir / f"node{index}.summary.json")
        summaries.append(summary)
        if process.returncode != 0 or summary is None:
            failed = True
            print(
                f"node{index} exited with code {process.returncode}; last lines of its log:\n{_tail(logs[index])}"
            )
            continue
        print(
            f"{index:<5} {process.returncode:>4} {summary['final_step']:>6} {summary['rounds_completed']:>6} "
            f"{summary['round']:>6} {summary['eval_loss']:>9.3f} {summary['bytes_sent'] / 1e6:>8.1f}  "
            f"{summary['digest'][:16]}"
        )
    done = [s for s in summaries if s is not None]
    by_round: dict[int, set[str]] = {}
    for s in done:
        for entry in s["history"]:
            by_round.setdefault(entry["round"], set()).add(entry["digest"])
    shared = [r for r, digests in by_round.items() if len(digests) > 1]
    if done:
        best = min(s["eval_loss"] for s in done)
        print(f"\nheld-out eval loss of x': {best:.3f} nats/byte (untrained: 5.545); {elapsed_s:.0f}s in all")
        print(
            "x' digests agree in every round the nodes shared"
            if not shared
            else f"x' digests DISAGREE in rounds {sorted(shared)[:10]}"
        )
    if not options.workdir:
        print(f"logs and summaries: {workdir}")
    return 1 if failed or shared else 0
