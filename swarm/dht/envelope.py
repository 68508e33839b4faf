"""Signed DHT records: every value a node writes is an envelope bound to its writer, key and expiry.

    value  = {"v": 2, "h": header, "s": signature}
    header = msgpack([family, run, expires_at, payload, public_key])
    signed = DOMAIN + msgpack([key, subkey]) + header

A key is ``swarm/<run>/<family>``. Each family has a shape (a dictionary of subkeys, or one regular
value), a bound on its bytes and on its lifetime, and a rule for who may sign it:

- ``subkey``: the subkey is (or starts with) the writer's peer id, and the signature must verify with
  the key that peer id holds: a member's heartbeat, its ``leaving`` notice included, can only be
  written by that member.
- ``pointer``: the payload is a checkpoint pointer, signed by its provider (``swarm.dht.pointer``),
  whose peer id begins the subkey; the envelope adds no signature of its own, so that members can
  store the coordinator archive's pointers as the archive signed them.
- ``creator``: a regular value of the run itself (its spec, its coordinator's address) carries its
  writer's public key, and that key's peer id must be the run's creator: the one whose fingerprint
  pins the run id (``name.pin``, ``swarm.dht.records.run_pin``). Members store the creator's
  envelope again as it is, so the record outlives the creator's node; no one else can replace it.

The same envelope carries a node's writes to the coordinator (``WRITE_FAMILIES``: ``reports`` and
``announcements``, signed by the writing peer under its own subkey, living at most ten minutes): the
payload is the exact protobuf bytes of the request, so the signature covers the bytes that were
sent, never a re-serialisation. Those families are refused in the DHT, and DHT families are refused
by the coordinator: a value signed for one place is worth nothing in the other.

``open_envelope`` checks everything that stays true as a record ages (never its expiry against the
clock, nor a credential: an honest replica's record must not turn invalid, or hivemind would drop
the whole dictionary it belongs to). It is what the record validator of every node's DHT runs
(``swarm.p2p``), and what readers run again in the main process, where ``Envelope.fresh`` and the
run's credentials are checked too.

Pure: hashlib, msgpack, cryptography. The coordinator and the light client may import it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.dht.pointer import Pointer, PointerError
from swarm.dht.records import (
    CoordinatorRecord,
    MemberRecord,
    RecordError,
    RunSpec,
    record_key,
    run_pin,
    split_run_id,
)
from swarm.identity import IdentityError, ed25519_public, peer_id_of, public_key_of_peer, public_key_protobuf
from swarm.peer_names import peer_from_name, peer_name

ENVELOPE_VERSION = 2
"""Version 1 records were unsigned dicts; nodes of that version cannot read these (and are refused)."""
DOMAIN = b"swarm-dht-record/2\x00"
CLOCK_SKEW_S = 60.0
"""How far ahead of our clock a writer's clock may run: its records may expire that much later."""
MAX_SUBKEY_CHARS = 128
MAX_VALUE_BYTES = 16 * 1024
"""hivemind's safe value size; no family comes near it."""
MAX_WRITE_BYTES = 4 * 1024 * 1024
"""A write to the coordinator: its gRPC message bound."""
WRITE_LIFETIME_S = 600.0
"""How long a signed write to the coordinator may be replayed: writes are idempotent (a report of a
round counts once, an announcement refreshes its provider), so a replay within it changes nothing."""


class EnvelopeError(ValueError):
    """A DHT value that is not a well-formed envelope signed by whom its family requires."""


@dataclass(frozen=True)
class Family:
    name: str
    shape: str
    """``dict`` (one subkey per writer) or ``regular`` (one value)."""
    signer: str
    """``subkey``, ``pointer`` or ``creator`` (see the module docstring)."""
    max_bytes: int
    """Bound on the whole envelope's bytes."""
    max_lifetime_s: float
    """A record may not expire later than this after it is checked (plus CLOCK_SKEW_S)."""


FAMILIES = {
    family.name: family
    for family in (
        Family("members", shape="dict", signer="subkey", max_bytes=12 * 1024, max_lifetime_s=600.0),
        Family(
            "checkpoints", shape="dict", signer="pointer", max_bytes=4 * 1024, max_lifetime_s=7 * 24 * 3600.0
        ),
        Family(
            "config", shape="regular", signer="creator", max_bytes=4 * 1024, max_lifetime_s=7 * 24 * 3600.0
        ),
        Family(
            "coordinator", shape="regular", signer="creator", max_bytes=1024, max_lifetime_s=7 * 24 * 3600.0
        ),
    )
}
"""The record families of the DHT."""

WRITE_FAMILIES = {
    family.name: family
    for family in (
        Family(
            "reports",
            shape="dict",
            signer="subkey",
            max_bytes=MAX_WRITE_BYTES,
            max_lifetime_s=WRITE_LIFETIME_S,
        ),
        Family(
            "announcements",
            shape="dict",
            signer="subkey",
            max_bytes=MAX_WRITE_BYTES,
            max_lifetime_s=WRITE_LIFETIME_S,
        ),
    )
}
"""A node's signed writes to the coordinator; never stored in the DHT."""


def _bytes_payload(payload: Any) -> bytes:
    """A write's payload: the request's protobuf bytes, parsed by the coordinator once it verifies."""
    if not isinstance(payload, bytes):
        raise RecordError("a write's payload is the request's bytes")
    return payload


SCHEMAS: dict[str, Callable[[Any], object]] = {
    "members": MemberRecord.from_wire,
    "checkpoints": Pointer.from_wire,
    "config": RunSpec.from_wire,
    "coordinator": CoordinatorRecord.from_wire,
    "reports": _bytes_payload,
    "announcements": _bytes_payload,
}
"""Each family's payload parser: the validator refuses a signed record whose payload is malformed."""


def parse_key(key: str, families: dict[str, Family] = FAMILIES) -> tuple[str, Family]:
    """The run id and family of a record key; EnvelopeError for a key of no family."""
    prefix, _, rest = key.partition("/")
    run_id, _, name = rest.rpartition("/")
    if prefix != "swarm" or not run_id or name not in families:
        raise EnvelopeError(f"{key!r} is not a key of a record family")
    return run_id, families[name]


def key_id(key: str) -> bytes:
    """The 20 bytes hivemind stores a key under (its ``DHTID``: SHA-1 of the msgpack of the key)."""
    return hashlib.sha1(msgpack.packb(key, use_bin_type=True)).digest()


@dataclass(frozen=True)
class Envelope:
    family: Family
    run_id: str
    expires_at: float
    payload: Any
    signer: bytes
    """Peer id of whoever signed it (for ``pointer``: the pointer's provider)."""

    def fresh(self, now: float) -> bool:
        return self.expires_at > now


def _signed(key: str, subkey: str | None, header: bytes) -> bytes:
    return DOMAIN + msgpack.packb([key, subkey], use_bin_type=True) + header


def seal(
    private: Ed25519PrivateKey | None, *, key: str, subkey: str | None, payload: Any, expires_at: float
) -> dict[str, Any]:
    """The envelope of ``payload`` under ``key``/``subkey``, signed with ``private`` (None only for
    the ``pointer`` family, whose payload is signed already)."""
    run_id, family = parse_key(key, FAMILIES | WRITE_FAMILIES)
    public = b""
    if family.signer == "creator":
        if private is None:
            raise EnvelopeError(f"a {family.name} record needs its writer's key")
        public = public_key_protobuf(private.public_key())
    header = msgpack.packb([family.name, run_id, float(expires_at), payload, public], use_bin_type=True)
    signature = b""
    if family.signer != "pointer":
        if private is None:
            raise EnvelopeError(f"a {family.name} record needs its writer's key")
        signature = private.sign(_signed(key, subkey, header))
    if len(header) + len(signature) > family.max_bytes:
        # Every node's validator would refuse it without a word: the writer hears it here instead.
        raise EnvelopeError(
            f"a {family.name} record of {len(header) + len(signature)} bytes is over its bound of"
            f" {family.max_bytes}"
        )
    return {"v": ENVELOPE_VERSION, "h": header, "s": signature}


def open_envelope(
    *,
    key: bytes,
    subkey: Any,
    value: Any,
    expiration_time: float,
    now: float,
    families: dict[str, Family] = FAMILIES,
) -> Envelope:
    """The envelope ``value`` stored under the key with DHT id ``key``, checked; else EnvelopeError.

    ``expiration_time`` is the one the DHT holds the record to: at most the envelope's own.
    ``families``: those that may be stored where the value was found (the DHT's, by default)."""
    if not isinstance(value, dict) or value.get("v") != ENVELOPE_VERSION:
        version = value.get("v") if isinstance(value, dict) else None
        raise EnvelopeError(f"record version {version!r} is not {ENVELOPE_VERSION}")
    header, signature = value.get("h"), value.get("s")
    if not isinstance(header, bytes) or not isinstance(signature, bytes):
        raise EnvelopeError("an envelope's header and signature are bytes")
    try:
        family_name, run_id, expires_at, payload, public = msgpack.unpackb(
            header, raw=False, strict_map_key=True
        )
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise EnvelopeError(f"an envelope's header does not decode: {e}") from None
    if not isinstance(family_name, str) or family_name not in families or not isinstance(run_id, str):
        raise EnvelopeError("an envelope names no family that may be stored here")
    family = families[family_name]
    full_key = record_key(run_id, family.name)
    if key_id(full_key) != key:
        raise EnvelopeError(f"an envelope for {full_key!r} is stored under another key")
    if len(header) + len(signature) > family.max_bytes:
        raise EnvelopeError(f"a {family.name} record is over {family.max_bytes} bytes")
    if (subkey is None) != (family.shape == "regular"):
        raise EnvelopeError(f"a {family.name} record is stored with the wrong shape")
    if subkey is not None and not (isinstance(subkey, str) and 0 < len(subkey) <= MAX_SUBKEY_CHARS):
        raise EnvelopeError("a subkey is a string of 1 to 128 characters")
    if not isinstance(expires_at, float) or not math.isfinite(expires_at):
        raise EnvelopeError("an envelope's expiry is not a time")
    if expiration_time > expires_at + 1e-3:
        raise EnvelopeError("the record is kept longer than its envelope allows")
    if expires_at > now + family.max_lifetime_s + CLOCK_SKEW_S:
        raise EnvelopeError(f"a {family.name} record may live at most {family.max_lifetime_s:.0f} s")
    signer = _check_signer(family, full_key, subkey, header, signature, public, payload, run_id, expires_at)
    try:
        SCHEMAS[family.name](payload)
    except (RecordError, PointerError) as e:
        raise EnvelopeError(f"a {family.name} record's payload: {e}") from None
    return Envelope(family=family, run_id=run_id, expires_at=expires_at, payload=payload, signer=signer)


def _check_signer(
    family: Family,
    key: str,
    subkey: str | None,
    header: bytes,
    signature: bytes,
    public: Any,
    payload: Any,
    run_id: str,
    expires_at: float,
) -> bytes:
    """The signer's peer id, once the family's rule holds."""
    try:
        if family.signer == "pointer":
            pointer = Pointer.from_wire(payload).check_signature()
            if subkey != f"{peer_name(pointer.provider)}/{pointer.round}" or pointer.run_id != run_id:
                raise EnvelopeError("a pointer is stored under another provider's or round's subkey")
            if abs(pointer.expires_at - expires_at) > 1e-3:
                raise EnvelopeError("a pointer's envelope outlives the pointer")
            return pointer.provider
        if family.signer == "subkey":
            signer = peer_from_name(subkey or "")
            verifier = public_key_of_peer(signer)
        else:
            if not isinstance(public, bytes):
                raise EnvelopeError(f"a {family.name} record names no public key")
            verifier, signer = ed25519_public(public), peer_id_of(public)
            pin = split_run_id(run_id)[1]
            if pin is None:
                raise EnvelopeError(
                    f"run {run_id!r} is not pinned to a creator: no one may sign its {family.name}"
                )
            if run_pin(signer) != pin:
                raise EnvelopeError(
                    f"a {family.name} record of run {run_id!r} is signed by another than its creator"
                )
        verifier.verify(signature, _signed(key, subkey, header))
        return signer
    except (PointerError, IdentityError, ValueError) as e:
        if isinstance(e, EnvelopeError):
            raise
        raise EnvelopeError(str(e)) from None
    except InvalidSignature:
        raise EnvelopeError(f"a {family.name} record's signature does not verify") from None
