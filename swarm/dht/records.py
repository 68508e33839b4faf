"""DHT records of a run: its configuration and its members' heartbeats.

Each record is a small dict of plain values with a version field ``v``; ``from_wire`` validates
every field and raises RecordError on anything unexpected. Keys are namespaced by run id. Records
stay far below hivemind's ~16 KB safe value size (see DESIGN.md): bulk data moves over streams.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from swarm.run_settings import MAX_TEXT, RUN_SETTINGS, RunSettings
from swarm.settings import SettingError, coerce, validate

MAX_CREDENTIAL_BYTES = 2048
"""The same bound as swarm.auth's (this module stays free of cryptography)."""
MAX_MEMBER_ADDRS = 16
MAX_MADDR_CHARS = 400

RECORD_VERSION = 1
MAX_ROUND_PERIOD_S = 3600.0
ARTIFACT_FIELDS = ("model_artifact", "data_artifact")
MAX_PARAM_COUNT = 1 << 40
"""The largest parameter count a run spec may name: 4 TiB of fp32 values, beyond any run."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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


PIN_CHARS = 16
"""A run id's pin: 16 base32 characters (80 bits) of the SHA-256 of its creator's peer id."""
_PIN = re.compile(r"^[a-z2-7]{16}$")
MAX_NAME_CHARS = 64 - 1 - PIN_CHARS
"""A run's name leaves room for ``.`` and the pin within the 64 characters of a run id."""


def run_pin(creator: bytes) -> str:
    """The pin of runs created by peer ``creator``: who alone may sign their spec and coordinator
    address (``swarm.dht.envelope``)."""
    digest = hashlib.sha256(creator).digest()
    return base64.b32encode(digest).decode()[:PIN_CHARS].lower()


def split_run_id(run_id: str) -> tuple[str, str | None]:
    """``(name, pin)`` of a pinned run id ``name.pin``; ``(run_id, None)`` for a bare name."""
    name, dot, pin = run_id.rpartition(".")
    if dot and name and _PIN.match(pin):
        return name, pin
    return run_id, None


def pinned_run_id(name: str, creator: bytes) -> str:
    """The full id of run ``name`` created by peer ``creator``."""
    if split_run_id(name)[1] is not None or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"run name {name!r} is already pinned or longer than {MAX_NAME_CHARS} characters")
    return f"{name}.{run_pin(creator)}"


def run_name(run_id: str) -> str:
    """The name of a run, without its pin (what credentials are issued for)."""
    return split_run_id(run_id)[0]


def record_key(run_id: str, family: str) -> str:
    """The DHT key of a record family of a run (``swarm.dht.envelope`` reads the family back from it)."""
    return f"swarm/{run_id}/{family}"


def config_key(run_id: str) -> str:
    return record_key(run_id, "config")


def members_key(run_id: str) -> str:
    return record_key(run_id, "members")


def checkpoints_key(run_id: str) -> str:
    """Signed checkpoint pointers (swarm/dht/pointer.py), one subkey per provider and round."""
    return record_key(run_id, "checkpoints")


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
class RunSpec(RunSettings):
    """What every member of a run must agree on: the run-level settings (``swarm.run_settings``,
    validated by their declarations), and what pins the model, data and software. The first node
    publishes it; joiners adopt it."""

    model_hash: str
    """sha256 of the model's configuration (so two different directories with one name differ)."""
    initial_digest: str
    """sha256 (hex) of the run's initial x': a joiner whose own initial x' has this digest, joining
    before any round committed, starts without downloading x'."""
    data_hash: str
    """sha256 of the tokenised training and eval bytes."""
    software: str
    """Version of Swarm's averaging protocol that the run speaks."""
    param_count: int | None = None
    """The trainable fp32 values of x' (what a checkpoint's ``model.safetensors`` holds): every
    checkpoint download of the run is bounded by it (``swarm.checkpoint.bounds``). None in a spec
    published before this field existed; such a run's downloads are bounded by the user's cap."""
    model_artifact: str = ""
    """Manifest hash of the run's model artifact (``swarm.checkpoint.artifacts``: its configuration,
    initial weights and tokenizer, served by every member): a joiner fetches the model by this hash,
    never by a path. Empty in a spec published before artifacts existed."""
    data_artifact: str = ""
    """Manifest hash of the run's data artifact (the tokenized training and held-out shards); empty
    where the run's data is read from each member's own files (the embedded corpus, older runs)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ARTIFACT_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, str) and (value == "" or _HEX64.match(value))):
                raise RecordError(f"run spec: {name} {value!r} is not a manifest hash (64 hex characters)")
        count = self.param_count
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PARAM_COUNT
        ):
            raise RecordError(f"run spec: parameter count {count!r} is not a whole number in [1, 2^40]")

    def to_wire(self) -> dict[str, Any]:
        # Lists travel comma-joined, as nodes of earlier versions published them.
        lists = {
            item.name: ",".join(getattr(self, item.name))
            for item in RUN_SETTINGS.values()
            if item.kind == "list"
        }
        record = {"v": RECORD_VERSION, **asdict(self), **lists}
        if self.param_count is None:  # as a spec from before the field reads
            del record["param_count"]
        return record

    @classmethod
    def from_wire(cls, raw: Any) -> RunSpec:
        """A spec from the DHT (or a saved state): every setting checked by its declaration."""
        _check_version(raw)
        values: dict[str, Any] = {}
        for field in fields(cls):
            item = RUN_SETTINGS.get(field.name)
            if field.name == "param_count":
                # Absent (or null in a checkpoint's swarm.json) where written before the field.
                count = raw.get("param_count")
                values[field.name] = None if count is None else _typed(raw, "param_count", int)
                continue
            if field.name in ARTIFACT_FIELDS:  # absent where written before artifacts
                values[field.name] = _typed(raw, field.name, str) if field.name in raw else ""
                continue
            if item is None:
                values[field.name] = _typed(raw, field.name, str)
                if len(values[field.name]) > MAX_TEXT:
                    raise RecordError(f"field {field.name!r} is longer than {MAX_TEXT} characters")
                continue
            if field.name not in raw:
                # Written by a version that did not have this setting, so it ran with the setting's
                # default (a new setting's default is the behaviour from before it existed).
                values[field.name] = item.default
                continue
            try:
                values[field.name] = (
                    coerce(item, raw[field.name]) if item.kind == "list" else validate(item, raw[field.name])
                )
            except SettingError as e:
                raise RecordError(f"run spec: {e}") from None
        return cls(**values)

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
    """The run's coordinator address, signed by the run's creator and stored again by members (a
    joiner learns it there)."""
    return record_key(run_id, "coordinator")


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
