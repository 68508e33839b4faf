"""DHT records of a run: its configuration and its members' heartbeats.

Each record is a small dict of plain values with a version field ``v``; ``from_wire`` validates
every field and raises RecordError on anything unexpected. Keys are namespaced by run id. Records
stay far below hivemind's ~16 KB safe value size (see DESIGN.md): bulk data moves over streams.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

MAX_CREDENTIAL_BYTES = 2048
"""The same bound as swarm.auth's (this module stays free of cryptography)."""
MAX_MEMBER_ADDRS = 16
MAX_MADDR_CHARS = 400

RECORD_VERSION = 1
MAX_RECORD_BYTES = 8 * 1024
MAX_ROUND_PERIOD_S = 3600.0
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RecordError(ValueError):
    """A DHT value that does not parse as the record it should be."""


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-64 characters of letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return run_id


def config_key(run_id: str) -> str:
    return f"swarm/{run_id}/config"


def members_key(run_id: str) -> str:
    return f"swarm/{run_id}/members"


def checkpoints_key(run_id: str) -> str:
    """Signed checkpoint pointers (swarm/checkpoint/pointer.py), one subkey per provider and round."""
    return f"swarm/{run_id}/checkpoints"


def _typed(raw: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(raw, dict):
        raise RecordError(f"record is a {type(raw).__name__}, expected a dict")
    if name not in raw:
        raise RecordError(f"record lacks field {name!r}")
    value = raw[name]
    # bool is an int subclass: never accept it where a number is expected.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RecordError(f"field {name!r} is a bool")
    if not isinstance(value, kind):
        raise RecordError(f"field {name!r} is a {type(value).__name__}")
    return value


def _check_version(raw: Any) -> None:
    version = _typed(raw, "v", int)
    if version != RECORD_VERSION:
        raise RecordError(f"record version {version} is not supported (this node speaks {RECORD_VERSION})")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What every member of a run must agree on. The first node publishes it; joiners adopt it."""

    model: str
    """Model preset name or the name of a local model directory."""
    model_hash: str
    """sha256 of the model's configuration (so two different directories with one name differ)."""
    initial_digest: str
    """sha256 (hex) of the run's initial x': a joiner whose own initial x' has this digest, joining
    before any round committed, starts without downloading x'."""
    data: str
    """Data source: ``stdlib`` for the embedded corpus, else the names of the local files."""
    data_hash: str
    """sha256 of the tokenised training and eval bytes."""
    codec: str
    """Codec of the averaging rounds."""
    sparsity: float
    """Cocktail codec: fraction of entries the shared random mask keeps."""
    topk: float
    """Cocktail codec: fraction of the kept entries that top-k selects."""
    bits: int
    """Cocktail codec: bits per selected value."""
    warmup_rounds: int
    """Rounds (by round id) averaged with the exact fp32 codec before the run's codec takes over."""
    exact_every: int
    """Every ``exact_every``-th round (by round id) is also exact: it flushes every member's residual
    and every owner's error into x', so all included members end it with x_i == x'. 0: never."""
    seq_len: int
    """Tokens per training sequence."""
    batch_size: int
    """Sequences per local optimizer step."""
    lr: float
    """Peak learning rate of the global schedule."""
    warmup_steps: int
    """Global steps of linear learning-rate warm-up."""
    total_steps: int
    """Global steps of the cosine schedule; the rate stays at its floor afterwards."""
    weight_decay: float
    """AdamW weight decay."""
    seed: int
    """Seed of the initial weights and of data sampling."""
    num_shards: int
    """Shards the flattened vector is cut into for the sharded reduce."""
    software: str
    """Version of Swarm's averaging protocol that the run speaks."""
    owner_key: str = ""
    """A closed run's owner public key (64 hex): only peers with a credential it signed take part.
    Empty: an open run."""

    def to_wire(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_wire(cls, raw: Any) -> RunSpec:
        _check_version(raw)
        values: dict[str, Any] = {}
        for field in fields(cls):
            kinds: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str}
            kind = kinds[str(field.type)]
            if field.name == "owner_key" and isinstance(raw, dict) and "owner_key" not in raw:
                values[field.name] = ""  # published by a version without closed runs: open
                continue
            values[field.name] = _typed(raw, field.name, kind)
            if kind is str and len(values[field.name]) > 512:
                raise RecordError(f"field {field.name!r} is longer than 512 characters")
        spec = cls(**values)
        if spec.seq_len < 1 or spec.batch_size < 1 or spec.num_shards < 1 or spec.total_steps < 1:
            raise RecordError("run spec has non-positive sizes")
        if not (0 < spec.sparsity <= 1 and 0 < spec.topk <= 1) or spec.bits not in (2, 4, 8):
            raise RecordError("run spec has cocktail settings out of range")
        if spec.warmup_rounds < 0 or spec.exact_every < 0:
            raise RecordError("run spec has negative warm-up rounds or exact-round interval")
        if spec.owner_key and not re.fullmatch(r"[0-9a-f]{64}", spec.owner_key):
            raise RecordError("run spec's owner key is not 64 hex characters")
        return spec

    def differences(self, other: RunSpec) -> list[str]:
        """Human-readable ``field: ours != theirs`` lines, empty when the specs agree."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True, kw_only=True)
class MemberRecord:
    """A live member's heartbeat: where its global copy stands."""

    round: int
    global_step: int
    local_steps_per_round: float
    leaving: bool = False
    """Set by a node that leaves gracefully: conductors stop waiting for it."""
    wanted_period_s: float = 0.0
    """Round period this member needs for its communication to hide behind compute (0: no opinion)."""
    credential: bytes = b""
    """In a closed run: the member's credential (swarm/auth.py); readers ignore records without one."""
    addrs: tuple[str, ...] = ()
    """Where the member can be dialled (multiaddrs, relay /p2p-circuit ones included): a peer that
    lost its connection to it, and whose daemon no longer knows an address (a relayed connection
    that was cut), dials these. A false address costs a failed dial only: libp2p checks the peer id
    in the handshake."""
    fresh: bool = False
    """The member joined by taking x' from peers and has committed no round since: conductors are
    chosen among the established members first (``swarm.averaging.round``)."""

    def to_wire(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, **asdict(self), "addrs": list(self.addrs)}

    @classmethod
    def from_wire(cls, raw: Any) -> MemberRecord:
        _check_version(raw)
        record = cls(
            round=_typed(raw, "round", int),
            global_step=_typed(raw, "global_step", int),
            local_steps_per_round=float(_typed(raw, "local_steps_per_round", (int, float))),
            leaving=_typed(raw, "leaving", bool),
            wanted_period_s=float(_typed(raw, "wanted_period_s", (int, float))),
            credential=_typed(raw, "credential", bytes)
            if isinstance(raw, dict) and "credential" in raw
            else b"",
            addrs=_member_addrs(raw),
            # Absent from the records of nodes older than the field: they are established members.
            fresh=_typed(raw, "fresh", bool) if isinstance(raw, dict) and "fresh" in raw else False,
        )
        if len(record.credential) > MAX_CREDENTIAL_BYTES:
            raise RecordError("member record's credential is too long")
        if record.round < 0 or record.global_step < 0 or not record.local_steps_per_round >= 0:
            raise RecordError("member record has negative counters")
        if not 0 <= record.wanted_period_s <= MAX_ROUND_PERIOD_S:
            raise RecordError(f"wanted round period outside [0, {MAX_ROUND_PERIOD_S}] s")
        return record


def _member_addrs(raw: dict) -> tuple[str, ...]:
    """A member record's optional address list (records of older nodes have none)."""
    if "addrs" not in raw:
        return ()
    addrs = _typed(raw, "addrs", (list, tuple))
    if len(addrs) > MAX_MEMBER_ADDRS:
        raise RecordError(f"member record lists {len(addrs)} addresses (at most {MAX_MEMBER_ADDRS})")
    for address in addrs:
        if not isinstance(address, str) or not address.startswith("/") or len(address) > MAX_MADDR_CHARS:
            raise RecordError(f"member record has a malformed address {str(address)[:60]!r}")
    return tuple(addrs)


def coordinator_key(run_id: str) -> str:
    """The run's coordinator address, stored by members that know it (a joiner learns it there)."""
    return f"swarm/{run_id}/coordinator"


_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$|^\[[0-9a-fA-F:.]{2,45}\]:[0-9]{1,5}$")


@dataclass(frozen=True, kw_only=True)
class CoordinatorRecord:
    """Where the run's coordinator listens (gRPC), as host:port."""

    address: str

    def __post_init__(self) -> None:
        if not _HOST_PORT.match(self.address) or not 0 < int(self.address.rsplit(":", 1)[1]) < 65536:
            raise RecordError(f"coordinator address {self.address[:60]!r} is not host:port")

    def to_wire(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, "address": self.address}

    @classmethod
    def from_wire(cls, raw: Any) -> CoordinatorRecord:
        _check_version(raw)
        return cls(address=_typed(raw, "address", str))
