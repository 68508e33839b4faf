"""``swarm-node pull``, ``status``, ``pause``, ``resume``, ``owner-key`` and ``credential``: the light
commands, which import neither torch nor hivemind.

They talk to a node's daemon through py-libp2p (``swarm.light.client``). ``node.cli`` hands these
commands over before it imports anything heavy.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from swarm.peer_names import peer_from_name, peer_name
from swarm.settings import Declared, SettingError, add_flag, declared, describe_default

if TYPE_CHECKING:
    from swarm.proto.swarm.checkpoint.v1.checkpoint_pb2 import StatusResponse

COMMANDS = ("pull", "status", "pause", "resume", "run-id", "owner-key", "credential")
ANSWER_TIMEOUT_S = 30.0
"""Default --timeout of pull and status: the light client's bound on each answer (the value of
``swarm.checkpoint.wire.ANSWER_TIMEOUT_S``, not imported here: this module loads before anything)."""
CONFIRM_TIMEOUT_S = 10.0
"""Default --timeout of pause and resume: a node confirms in its status file within a training step."""
CONFIRM_POLL_S = 0.2
"""How often pause and resume read the node's status file for its confirmation."""
LOAD_HINT = (
    "load it with: safetensors.torch.load_file('{folder}/model.safetensors'), or"
    " transformers.AutoModelForCausalLM.from_pretrained('{folder}')"
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    pull = commands.add_parser(
        "pull",
        help="download the latest (or a given) checkpoint from a running swarm",
        description="Download a checkpoint from every peer that serves it, verify it, and write a model folder.",
    )
    pull.add_argument("--peer", required=True, help="multiaddr of any live node, with /p2p/<peer id>")
    pull.add_argument("--run-id", default="", help="run to pull (default: the run that peer trains)")
    pull.add_argument(
        "--step", type=int, default=None, help="the checkpoint of this round (default: the newest)"
    )
    pull.add_argument("--out", required=True, help="folder to write (an interrupted pull resumes from it)")
    pull.add_argument(
        "--force",
        action="store_true",
        help="replace --out even when it holds files that are not a checkpoint pulled before",
    )
    cap = _download_cap()
    add_flag(pull, cap, default=cap.default, help=(cap.meta.help + describe_default(cap)).replace("%", "%%"))
    status = commands.add_parser("status", help="show a running swarm: run, round, members, checkpoints")
    status.add_argument("--peer", required=True, help="multiaddr of any live node, with /p2p/<peer id>")
    for parser, what in ((pull, "each answer"), (status, "the answer")):
        parser.add_argument(
            "--timeout",
            type=float,
            default=ANSWER_TIMEOUT_S,
            help=f"seconds to wait for {what} (default {ANSWER_TIMEOUT_S:.0f})",
        )
    for name, what in (("pause", "pause local training (the node stays in the rounds)"),
                       ("resume", "resume local training after swarm-node pause")):  # fmt: skip
        control = commands.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}.")
        control.add_argument(
            "--status-file", required=True, help="the --status-file of the node to control (names its pid)"
        )
        control.add_argument(
            "--timeout", type=float, default=CONFIRM_TIMEOUT_S, help="seconds to wait for the node to confirm"
        )
    run_id = commands.add_parser(
        "run-id",
        help="print the id a run gets when this key starts it (for the coordinator's --run)",
        description="Print NAME.PIN: the id of run NAME started by the node with this identity (made if"
        " missing), so that the coordinator can be told which run it serves before the node starts.",
    )
    run_id.add_argument("name", help="the run's name (what the creator passes as --run-id)")
    run_id.add_argument(
        "--identity",
        help="the creator node's --identity key file (created if missing); default: the data folder's"
        " (--home, $SWARM_HOME, else ~/.local/share/swarm), as swarm-node join uses it",
    )
    run_id.add_argument("--home", help="the creator node's --home data folder")
    owner = commands.add_parser(
        "owner-key",
        help="create a run owner's key (for a closed run's credentials)",
        description="Create an Ed25519 key that signs a closed run's credentials; prints its public key.",
    )
    owner.add_argument("--out", required=True, help="key file to create (kept secret; never overwritten)")
    credential = commands.add_parser(
        "credential",
        help="issue or revoke a closed run's credentials",
        description="Issue a credential that lets one peer id take part in a closed run, or revoke one.",
    )
    actions = credential.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="issue a credential for one peer id")
    issue.add_argument("--owner-key", required=True, help="the run owner's key file (swarm-node owner-key)")
    issue.add_argument("--run-id", required=True)
    issue.add_argument(
        "--peer-id", required=True, help="the volunteer's peer id (12D3KooW...; see --identity)"
    )
    issue.add_argument("--days", type=float, default=30.0, help="validity in days (default 30)")
    issue.add_argument("--out", required=True, help="credential file to write (give it to the volunteer)")
    revoke = actions.add_parser("revoke", help="add credential serials to the run's signed revocation list")
    revoke.add_argument("--owner-key", required=True)
    revoke.add_argument("--run-id", required=True)
    revoke.add_argument(
        "--serial", type=int, action="append", required=True, help="serial to revoke (repeatable)"
    )
    revoke.add_argument(
        "--list", required=True, help="revocation list file (created, or extended and re-signed)"
    )


def _download_cap() -> Declared:
    """``--max-checkpoint-gb``, declared once with the node's setting (``swarm.checkpoint.bounds``)."""
    from swarm.checkpoint.bounds import DownloadLimits

    (cap,) = declared(DownloadLimits, "checkpoints")
    return cap


def _pull(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from swarm.checkpoint.bounds import DownloadLimits
    from swarm.light.client import pull

    try:
        limits = DownloadLimits(max_gb=args.max_checkpoint_gb)
    except SettingError as e:
        print(f"swarm-node pull: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    bar: list[tqdm] = []

    def on_manifest(manifest, pointers) -> None:  # type: ignore[no-untyped-def]
        print(
            f"run {manifest.run_id}, round {manifest.round}, step {manifest.global_step}:"
            f" {manifest.total_bytes / 1e6:.1f} MB from {len(pointers)} provider(s)",
            flush=True,
        )
        bar.append(tqdm(total=manifest.total_bytes, unit="B", unit_scale=True, desc="pull"))

    def on_progress(have: int, total: int) -> None:
        if bar:
            bar[0].update(have - bar[0].n)

    started = time.monotonic()
    try:
        result = pull(
            args.peer, out, run_id=args.run_id, round=args.step, timeout_s=args.timeout,
            on_manifest=on_manifest, on_progress=on_progress, force=args.force, max_bytes=limits.max_bytes,
        )  # fmt: skip
    finally:
        if bar:
            bar[0].close()
    seconds = time.monotonic() - started
    fetched = result.manifest.total_bytes - result.resumed_bytes
    print(
        f"verified {len(result.manifest.chunks())} chunks into {result.folder}"
        f" ({fetched / 1e6:.1f} MB fetched in {seconds:.1f} s, of which {result.transfer_s:.1f} s transfer at"
        f" {fetched / 1e6 / max(result.transfer_s, 1e-9):.1f} MB/s; {result.resumed_bytes / 1e6:.1f} MB resumed,"
        f" {result.bad_providers} provider(s) dropped for corrupt data)"
    )
    print(LOAD_HINT.format(folder=result.folder))
    return 0


def describe_status(answer: StatusResponse, answering: str) -> list[str]:
    """The lines ``status`` prints for a ``StatusResponse`` from the node named ``answering``
    (base58). Its own round is the one its x' is at now; the other members' rounds are those of
    their last heartbeat in the DHT, written every few seconds: several rounds behind where rounds
    are short, so they are labelled as such, not shown next to the answering node's round as if
    of one moment."""
    lines = [
        f"run {answer.run_id}: model {answer.model}, codec {answer.codec}",
        f"the answering node {answering}: round {answer.round}, global step {answer.global_step}",
        f"{len(answer.members)} live member(s), at the round of their last heartbeat (it may lag):",
    ]
    for m in answer.members:
        name = peer_name(m.peer_id)
        where = (
            f"round {answer.round} (the answering node)"
            if name == answering
            else f"heartbeat at round {m.round}"
        )
        lines.append(f"  {name}  {where}{'  (leaving)' if m.leaving else ''}")
    return lines


def _status(args: argparse.Namespace) -> int:
    from swarm.checkpoint.wire import verified
    from swarm.light.client import status

    answer = status(args.peer, timeout_s=args.timeout)
    for line in describe_status(answer, args.peer.rsplit("/p2p/", 1)[-1]):
        print(line)
    pointers = verified(list(answer.checkpoints))
    print(f"{len(pointers)} checkpoint pointer(s):")
    for p in pointers:
        print(f"  round {p.round}  step {p.global_step}  {p.total_bytes / 1e6:.1f} MB  manifest {p.manifest_hash[:16]}"
              f"  from {peer_name(p.provider)}")  # fmt: skip
    return 0


def _control(args: argparse.Namespace) -> int:
    """Signal the node named by its status file, and wait until its status confirms."""
    import json
    import os
    import signal

    path = Path(args.status_file)
    try:
        status = json.loads(path.read_text())
        pid = int(status["pid"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"swarm-node {args.command}: cannot read a node's pid from {path}: {e}", file=sys.stderr)
        return 2
    want = "paused" if args.command == "pause" else "training"
    try:
        os.kill(pid, signal.SIGUSR1 if args.command == "pause" else signal.SIGUSR2)
    except ProcessLookupError:
        print(f"swarm-node {args.command}: the node (pid {pid}) is not running", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text()).get("state") == want:
                print(f"node {pid}: {want}")
                return 0
        except (OSError, ValueError):
            pass
        time.sleep(CONFIRM_POLL_S)
    print(
        f"swarm-node {args.command}: node {pid} did not confirm within {args.timeout:.0f} s", file=sys.stderr
    )
    return 1


def _run_id(args: argparse.Namespace) -> int:
    from swarm.dht.records import pinned_run_id
    from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf

    if args.identity:
        path = Path(args.identity)
    else:
        from node.home import IDENTITY_FILE, default_home

        path = (Path(args.home) if args.home else default_home()) / IDENTITY_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            generate_identity(path)
        key = load_identity(path)
    except OSError as e:
        print(f"swarm-node run-id: {path}: {e}", file=sys.stderr)
        return 2
    if key is None:
        print(f"swarm-node run-id: {path} is not an Ed25519 key", file=sys.stderr)
        return 2
    try:
        print(pinned_run_id(args.name, peer_id_of(public_key_protobuf(key.public_key()))))
    except ValueError as e:
        print(f"swarm-node run-id: {e}", file=sys.stderr)
        return 2
    return 0


def _owner_key(args: argparse.Namespace) -> int:
    from swarm.auth import owner_public_key
    from swarm.identity import generate_identity, load_identity

    path = Path(args.out)
    try:
        generate_identity(path)
    except FileExistsError:
        print(f"swarm-node owner-key: {path} exists; not overwriting a key", file=sys.stderr)
        return 2
    key = load_identity(path)
    assert key is not None
    print(f"owner key written to {path} (keep it secret)")
    print(f"public key: {owner_public_key(key)}")
    return 0


def _credential(args: argparse.Namespace) -> int:
    from swarm.auth import CredentialError, Revocations, issue, owner_public_key, revoke
    from swarm.identity import load_identity

    try:
        key = load_identity(Path(args.owner_key))
    except OSError as e:
        print(f"swarm-node credential: cannot read {args.owner_key}: {e}", file=sys.stderr)
        return 2
    if key is None:
        print(
            f"swarm-node credential: {args.owner_key} is not an Ed25519 key (swarm-node owner-key)",
            file=sys.stderr,
        )
        return 2
    if args.action == "issue":
        try:
            peer = peer_from_name(args.peer_id)
            credential = issue(key, run_id=args.run_id, peer_id=peer, valid_s=args.days * 86400)
        except ValueError as e:
            print(f"swarm-node credential issue: {e}", file=sys.stderr)
            return 2
        Path(args.out).write_bytes(credential.to_bytes())
        print(
            f"credential {credential.serial} for {args.peer_id} in run {args.run_id!r}, valid {args.days:g} days:"
        )
        print(f"  {args.out}")
        return 0
    path = Path(args.list)
    serials: set[int] = set(args.serial)
    if path.exists():
        try:
            old = Revocations.from_bytes(
                path.read_bytes(), owner_key=owner_public_key(key), run_id=args.run_id
            )
        except CredentialError as e:
            print(f"swarm-node credential revoke: {path}: {e}", file=sys.stderr)
            return 2
        serials |= old.serials
    path.write_bytes(revoke(key, run_id=args.run_id, serials=serials).to_bytes())
    print(f"{len(serials)} serial(s) revoked in {path}")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="swarm-node")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if args.command in ("pause", "resume"):
        return _control(args)
    if args.command == "owner-key":
        return _owner_key(args)
    if args.command == "run-id":
        return _run_id(args)
    if args.command == "credential":
        return _credential(args)
    from swarm.light.client import LightError

    try:
        return _pull(args) if args.command == "pull" else _status(args)
    except LightError as e:
        print(f"swarm-node {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"swarm-node {args.command}: interrupted (run it again to resume)", file=sys.stderr)
        return 130
