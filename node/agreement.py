"""Run-spec agreement and credentials: which run this node takes part in, and whether it may.

The first node of a run publishes its RunSpec (model, data, codec, schedule, owner key) in the DHT;
a joiner reads it before loading anything and adopts it, and any run-level setting it gave
explicitly must agree. A closed run (an owner key in its spec) admits only peers holding a
credential its owner signed: this node's own credential is checked at start, clearly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from node.errors import NodeError
from node.resume import ResumeError
from node.sections import RUN_SETTINGS, NetworkConfig, NodeConfig, RunConfig
from swarm.auth import CredentialError, Gate, Revocations
from swarm.averaging.context import PROTOCOL_VERSION
from swarm.checkpoint.service import ask_status
from swarm.compression.cocktail import CocktailParams
from swarm.compression.codecs import Codec
from swarm.compression.registry import make_codec
from swarm.data.documents import DEFAULT_DATA
from swarm.dht.records import (
    ARTIFACT_FIELDS,
    RECORD_VERSION,
    RecordError,
    RunSpec,
    config_key,
    pinned_run_id,
    run_name,
    run_pin,
    split_run_id,
)
from swarm.identity import generate_identity, load_identity
from swarm.models.build import ModelSource
from swarm.p2p import PEER_ERRORS, Sealed, SwarmHost
from swarm.peer_names import peer_from_name, short_name

logger = logging.getLogger("swarm.node")

SPEC_TTL_S = 7 * 24 * 3600.0
"""Lifetime of the run spec in the DHT: its creator signs it anew every hour while it runs, and
members store it again (``RunAgreement.keep_up``), so new nodes can join for a week after the
creator's node is gone."""
SPEC_LOOKUPS = 11
"""How often a joiner looks for the run spec before it concludes that no such run exists."""
SPEC_LOOKUP_INTERVAL_S = 0.5
"""Pause between look-ups: the swarm may answer while our routing table is still filling."""
RESOLVE_TIMEOUT_S = 10.0
"""How long a joiner waits for its --peer to say which run it trains."""
SPEC_RESTORE_INTERVAL_S = 3600.0
"""How often a member stores the run spec again (as its creator signed it), so that it outlives the
creator's node and the DHT nodes that held it."""
SOFTWARE = f"swarm-averaging/{PROTOCOL_VERSION}"
"""What a run's spec says its members speak; a joiner speaking anything else is refused."""


def identity_file(net: NetworkConfig, default: Path) -> Path:
    """The peer key file (created as Ed25519 if missing; ``default``, the data folder's, without
    --identity), checked to hold an Ed25519 key, which the host signs its DHT records with."""
    path = Path(net.identity) if net.identity is not None else default
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_identity(path)
    if load_identity(path) is None:
        raise NodeError(
            f"--identity {path} is not an Ed25519 key: this node could sign none of its DHT records"
            " (move the file away to have a new key made)"
        )
    return path


DEFAULT_RUN_NAME = "swarm"
"""``--run-id``'s default: the name a run started without one gets; a joiner without one joins the
run its ``--peer`` trains."""


async def full_run_id(config: NodeConfig, host: SwarmHost) -> str:
    """The pinned id of the run this node takes part in (``name.pin``, ``swarm.dht.records``).

    A node starting a run pins its name to its own peer id: only it may sign the run's spec and
    coordinator address. A joiner takes a pinned --run-id as given (no one but its creator can have
    published that run's spec), and a bare name as the run its --peer trains under that name:
    the peer's id is in the address the joiner was given, so the answer comes from whom the user
    chose to trust. A joiner without --run-id joins whatever run its --peer trains."""
    run_id, peers = config.run.run_id, config.network.peers
    name, pin = split_run_id(run_id)
    if not peers:
        if pin is None:
            return pinned_run_id(name, host.peer_id)
        if pin != run_pin(host.peer_id):
            raise NodeError(
                f"run {run_id!r} was started by another peer, and only its peer key may restart it"
                f" (pass its --identity); to join it, pass --peer with a member's address; to start"
                f" a new run, pass the bare name {name!r}"
            )
        return run_id
    if pin is not None:
        return run_id
    answers: list[str] = []
    for attempt in range(SPEC_LOOKUPS):
        for maddr in peers:
            peer = peer_from_name(maddr.rsplit("/p2p/", 1)[1])
            try:
                theirs = (await ask_status(host, peer, timeout_s=RESOLVE_TIMEOUT_S)).run_id
            except PEER_ERRORS as e:
                answers.append(f"{maddr}: {e}")
                continue
            if split_run_id(theirs)[1] is not None and run_name(theirs) == name:
                logger.debug("run %r is %r (as its member %s says)", name, theirs, short_name(peer))
                return theirs
            if split_run_id(theirs)[1] is not None and run_id == DEFAULT_RUN_NAME:
                # No --run-id: a volunteer given only --peer joins the run that peer trains.
                logger.info("joining run %r, which %s trains", theirs, short_name(peer))
                return theirs
            answers.append(f"{maddr} trains {theirs!r}")
        if attempt < SPEC_LOOKUPS - 1:
            await asyncio.sleep(SPEC_LOOKUP_INTERVAL_S)
    raise NodeError(
        f"no peer trains a run named {name!r} ({'; '.join(dict.fromkeys(answers))}): check"
        " --run-id, or pass the full id (name.pin) that the run's first node printed"
    )


def spec_for(
    run: RunConfig,
    *,
    model_hash: str,
    data_hash: str,
    initial_digest: str,
    model_artifact: str = "",
    data_artifact: str = "",
) -> RunSpec:
    """The spec a node starting run ``run.run_id`` publishes: its settings, defaults filled in. What
    the run's artifacts carry is named by their folder's and files' names, never by the founder's
    paths (which tell strangers about its machine and mean nothing on theirs)."""
    values = run.resolved()
    if model_artifact and Path(values.model).is_dir():
        values = replace(values, model=Path(values.model).resolve().name)
    if data_artifact and list(values.data) != [DEFAULT_DATA]:
        values = replace(values, data=tuple(Path(d).resolve().name for d in values.data))
    return RunSpec(
        **asdict(values),
        model_hash=model_hash,
        initial_digest=initial_digest,
        data_hash=data_hash,
        software=SOFTWARE,
        model_artifact=model_artifact,
        data_artifact=data_artifact,
    )


def check_adoption(run: RunConfig, spec: RunSpec) -> None:
    """A joiner's explicit run-level settings must match the run's."""
    mismatches = [
        f"{RUN_SETTINGS[name].label}: this node has {_shown(value)}, the run has {_shown(getattr(spec, name))}"
        for name, value in run.explicit().items()
        if value != getattr(spec, name)
    ]
    if spec.software != SOFTWARE:
        mismatches.append(f"software: this node speaks {SOFTWARE}, the run {spec.software}")
    if mismatches:
        raise NodeError(
            f"this node's settings contradict run {run.run_id!r}: "
            + "; ".join(mismatches)
            + " (drop these options to adopt the run's values, or pick another --run-id)"
        )


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else repr(value)


def check_saved_spec(saved: dict[str, Any], spec: RunSpec, folder: Path) -> None:
    """A resume state or checkpoint must come from a run with this run's settings (its initial x'
    digest aside: a checkpoint started elsewhere may have begun from other weights; and its
    parameter count where it was saved before specs named one: the model's hash pins it too)."""
    if not isinstance(saved, dict):
        raise ResumeError(f"{folder} holds no run settings this version can read")
    try:
        theirs = RunSpec.from_wire({**saved, "v": RECORD_VERSION})
    except RecordError as e:
        raise ResumeError(f"{folder} holds run settings this version cannot read: {e}") from None
    ignored = ("initial_digest",) + (("param_count",) if theirs.param_count is None else ())
    ignored += tuple(name for name in ARTIFACT_FIELDS if not getattr(theirs, name))  # saved before artifacts
    differences = [d for d in theirs.differences(spec) if not d.startswith(ignored)]
    if differences:
        raise ResumeError(
            f"{folder} was saved under other run settings: {'; '.join(differences)} (remove that folder to"
            " start afresh, or choose another --run-id)"
        )


def codec_for_spec(spec: RunSpec) -> Codec:
    params = (
        CocktailParams(sparsity=spec.sparsity, topk=spec.topk, bits=spec.bits)
        if spec.codec == "cocktail"
        else None
    )
    return make_codec(spec.codec, params)


class RunAgreement:
    """Finds or publishes the run's spec in the DHT, keeps it there, and decides who may take part."""

    def __init__(self, config: NodeConfig, host: SwarmHost) -> None:
        self.config = config
        self.host = host
        self._sealed: Sealed | None = None
        """The spec as its creator sealed it (a joiner's), stored again by ``keep_up``."""
        self._published: RunSpec | None = None
        """The spec this node published as the run's creator."""
        self._gate: Gate | None = None

    async def find(self) -> RunSpec | None:
        """A joiner's run spec, read once before anything is loaded; None for a node starting the run."""
        run, peers = self.config.run, self.config.network.peers
        if not peers:
            return None
        key = config_key(run.run_id)
        for attempt in range(SPEC_LOOKUPS):
            sealed = await self.host.dht_get_sealed(key, RunSpec.from_wire)
            if sealed is not None:
                check_adoption(run, sealed.record)
                self._sealed = sealed
                return sealed.record
            if attempt < SPEC_LOOKUPS - 1:
                await asyncio.sleep(SPEC_LOOKUP_INTERVAL_S)
        raise NodeError(
            f"the peers at {', '.join(peers)} answered, but no spec of run {run.run_id!r} signed by its"
            " creator is published in their swarm: check --run-id"
        )

    async def publish(self, spec: RunSpec) -> None:
        """Publish the spec of the run this node starts, signed with its key (the run's pin)."""
        self._published = spec
        await self.host.dht_store(config_key(self.config.run.run_id), spec.to_wire(), ttl_s=SPEC_TTL_S)

    async def keep_up(self) -> None:
        """Store the run's spec again every hour: the creator signs it anew, a member stores the
        creator's envelope as it is, so the spec outlives both the creator's node and the DHT nodes
        that first held it."""
        key = config_key(self.config.run.run_id)
        while True:
            await asyncio.sleep(SPEC_RESTORE_INTERVAL_S)
            try:
                if self._published is not None:
                    await self.host.dht_store(key, self._published.to_wire(), ttl_s=SPEC_TTL_S)
                    continue
                sealed = self._sealed
                newer = await self.host.dht_get_sealed(key, RunSpec.from_wire)
                if (
                    sealed
                    and newer
                    and newer.record == sealed.record
                    and newer.expires_at > sealed.expires_at
                ):
                    sealed = self._sealed = newer  # the creator signed it anew
                if sealed is not None:
                    await self.host.dht_store_sealed(key, sealed)
            # The boundary of a background task: whatever the DHT's process raised, store again later.
            except Exception as e:
                logger.debug("could not store the run spec again: %s", e)

    def gate(self, spec: RunSpec) -> Gate:
        """Who may take part in this run, and this node's own credential (checked the first time,
        clearly: a joiner's before it asks for the run's artifacts)."""
        if self._gate is None or self._gate.owner_key != spec.owner_key:
            self._gate = self._read_gate(spec)
        return self._gate

    def _read_gate(self, spec: RunSpec) -> Gate:
        net, run_id, host = self.config.network, self.config.run.run_id, self.host
        if not spec.owner_key:
            if net.credential is not None:
                logger.info("run %r is open: --credential is not needed", run_id)
            return Gate(run_id=run_id)
        revoked: frozenset[int] = frozenset()
        if net.revocations is not None:
            try:
                raw = Path(net.revocations).read_bytes()
                revoked = Revocations.from_bytes(raw, owner_key=spec.owner_key, run_id=run_id).serials
            except (OSError, CredentialError) as e:
                raise NodeError(f"--revocations {net.revocations}: {e}") from None
        own = b""
        if net.credential is not None:
            try:
                own = Path(net.credential).read_bytes()
            except OSError as e:
                raise NodeError(f"--credential {net.credential}: {e}") from None
        gate = Gate(run_id=run_id, owner_key=spec.owner_key, own_credential=own, revoked=revoked)
        problem = gate.problem(host.peer_id, own)
        if problem is None:
            logger.info("closed run %r: this node's credential is valid", run_id)
        elif self.config.fault.ignore_auth:
            logger.warning(
                "test hook: taking part in closed run %r without a valid credential (%s)", run_id, problem
            )
        else:
            raise NodeError(
                f"run {run_id!r} is closed and this node may not take part: {problem}. Ask the run's owner"
                f" for a credential for peer id {host.peer_name} (swarm-node credential issue --peer-id"
                f" {host.peer_name} ...), then pass --credential FILE, with --identity so the peer id stays"
            )
        return gate


def check_param_count(run_id: str, spec: RunSpec, param_count: int) -> None:
    """This node's model must have the parameter count the run's spec names (a spec published
    before specs named one names none)."""
    if spec.param_count is not None and spec.param_count != param_count:
        raise NodeError(
            f"this node's model has {param_count} trainable parameters, run {run_id!r}'s has {spec.param_count}"
        )


def check_local_sources(run_id: str, spec: RunSpec, data: Any, source: ModelSource) -> None:
    """This node's data and model must be the ones the run's spec names (by hash). ``data``: a
    ``node.data.RunData`` (its description and content hash)."""
    if spec.data_hash != data.content_hash:
        raise NodeError(
            f"this node's data ({data.description}) differs from run {run_id!r}'s: hash"
            f" {data.content_hash[:12]} != {spec.data_hash[:12]} (same files? same Python version for stdlib?)"
        )
    if spec.model_hash != source.config_hash:
        raise NodeError(f"this node's model {spec.model!r} has another configuration than run {run_id!r}'s")
