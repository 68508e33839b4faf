"""Credentials of a closed run: the run owner's key signs who may take part, for how long.

A closed run names its owner's Ed25519 public key. A credential says "peer P may take part in run
R until T" (with a serial number the owner can revoke), signed by the owner's key over a canonical
encoding. A verifier accepts it only for the peer presenting it, in that run, before it expires,
signed by that run's owner, and with a serial not in the owner's signed revocation list.

Enforcement (join requests, heartbeats, DHT records, checkpoint pointers) is built on this module;
this module itself is pure apart from ``cryptography``: the light commands that make keys and issue
credentials import it, never torch or hivemind.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from swarm.dht.records import run_name

CREDENTIAL_VERSION = 1
MAX_CREDENTIAL_BYTES = 2048
MAX_VALIDITY_S = 366 * 24 * 3600.0
MAX_REVOKED = 100_000
_HEX = re.compile(r"^[0-9a-f]*$")


class CredentialError(ValueError):
    """A credential or revocation list that is malformed, expired, revoked or not the owner's."""


def owner_public_key(key: Ed25519PrivateKey) -> str:
    """The owner's public key as the run names it: 64 hex characters."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _public(owner_key: str) -> Ed25519PublicKey:
    if len(owner_key) != 64 or not _HEX.match(owner_key):
        raise CredentialError("an owner key is 64 hex characters (an Ed25519 public key)")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(owner_key))


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, kw_only=True)
class Credential:
    run_id: str
    peer_id: bytes
    """The libp2p peer id (bytes) the credential is bound to: only that peer may present it."""
    expires_at: float
    serial: int
    owner_key: str
    signature: bytes = b""

    def _document(self) -> dict[str, Any]:
        return {
            "v": CREDENTIAL_VERSION,
            "run_id": self.run_id,
            "peer_id": self.peer_id.hex(),
            "expires_at": round(self.expires_at, 3),
            "serial": self.serial,
            "owner_key": self.owner_key,
        }

    def signed_bytes(self) -> bytes:
        return b"swarm-credential:" + _canonical(self._document())

    def to_bytes(self) -> bytes:
        return _canonical({**self._document(), "signature": self.signature.hex()})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Credential:
        """Parse (types and sizes only; ``verify`` checks the rest). Raises CredentialError."""
        if len(raw) > MAX_CREDENTIAL_BYTES:
            raise CredentialError(f"credential of {len(raw)} bytes is over {MAX_CREDENTIAL_BYTES}")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CredentialError(f"credential is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("v") != CREDENTIAL_VERSION:
            raise CredentialError(f"not a version-{CREDENTIAL_VERSION} credential")
        kinds: dict[str, type | tuple[type, ...]] = {"run_id": str, "peer_id": str, "expires_at": (int, float), "serial": int, "owner_key": str,
                 "signature": str}  # fmt: skip
        for name, kind in kinds.items():
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise CredentialError(f"credential field {name!r} is missing or of the wrong type")
        for name in ("peer_id", "signature", "owner_key"):
            if not _HEX.match(doc[name]) or len(doc[name]) % 2 or len(doc[name]) > 256:
                raise CredentialError(f"credential field {name!r} is not short hex")
        if not 0 <= doc["serial"] < 2**63 or not math.isfinite(doc["expires_at"]):
            raise CredentialError("credential serial or expiry out of range")
        return cls(
            run_id=doc["run_id"],
            peer_id=bytes.fromhex(doc["peer_id"]),
            expires_at=float(doc["expires_at"]),
            serial=doc["serial"],
            owner_key=doc["owner_key"],
            signature=bytes.fromhex(doc["signature"]),
        )

    def verify(
        self,
        *,
        owner_key: str,
        run_id: str,
        peer_id: bytes,
        revoked: frozenset[int] = frozenset(),
        now: float | None = None,
    ) -> Credential:
        """Return self if it lets ``peer_id`` take part in ``run_id`` now; else raise CredentialError.

        A credential names the run by its name: the owner issues it before the run's first node
        exists, and so before the run id is pinned to that node (``swarm.dht.records``)."""
        now = time.time() if now is None else now
        if self.owner_key != owner_key:
            raise CredentialError("credential was issued by another owner than the run's")
        if run_name(self.run_id) != run_name(run_id):
            raise CredentialError(f"credential is for run {self.run_id[:64]!r}, not {run_id!r}")
        if self.peer_id != peer_id:
            raise CredentialError("credential belongs to another peer")
        if self.expires_at <= now:
            raise CredentialError("credential has expired")
        if self.serial in revoked:
            raise CredentialError(f"credential {self.serial} was revoked")
        try:
            _public(owner_key).verify(self.signature, self.signed_bytes())
        except InvalidSignature:
            raise CredentialError("credential signature does not verify") from None
        return self


def issue(
    owner: Ed25519PrivateKey, *, run_id: str, peer_id: bytes, valid_s: float, serial: int | None = None
) -> Credential:
    """A credential for ``peer_id`` in ``run_id``, valid ``valid_s`` seconds from now."""
    if not 0 < valid_s <= MAX_VALIDITY_S:
        raise ValueError(f"a credential is valid for up to {MAX_VALIDITY_S / 86400:.0f} days")
    if not 1 <= len(run_id) <= 128 or not 1 <= len(peer_id) <= 64:
        raise ValueError("run id and peer id must be non-empty and short")
    unsigned = Credential(
        run_id=run_id,
        peer_id=peer_id,
        expires_at=round(time.time() + valid_s, 3),
        serial=secrets.randbits(62) if serial is None else serial,
        owner_key=owner_public_key(owner),
    )
    return Credential(**{**unsigned.__dict__, "signature": owner.sign(unsigned.signed_bytes())})


@dataclass(frozen=True, kw_only=True)
class Revocations:
    """The owner's signed list of revoked credential serials for one run (newest ``issued_at`` wins)."""

    run_id: str
    serials: frozenset[int]
    issued_at: float
    owner_key: str
    signature: bytes = b""

    def _document(self) -> dict[str, Any]:
        return {"v": CREDENTIAL_VERSION, "run_id": self.run_id, "serials": sorted(self.serials),
                "issued_at": round(self.issued_at, 3), "owner_key": self.owner_key}  # fmt: skip

    def signed_bytes(self) -> bytes:
        return b"swarm-revocations:" + _canonical(self._document())

    def to_bytes(self) -> bytes:
        return _canonical({**self._document(), "signature": self.signature.hex()})

    @classmethod
    def from_bytes(cls, raw: bytes, *, owner_key: str, run_id: str) -> Revocations:
        """Parse and verify against the run's owner. Raises CredentialError."""
        if len(raw) > 64 + 21 * MAX_REVOKED:
            raise CredentialError("revocation list is too large")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CredentialError(f"revocation list is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("v") != CREDENTIAL_VERSION:
            raise CredentialError("not a version-1 revocation list")
        serials, signature = doc.get("serials"), doc.get("signature")
        if not isinstance(serials, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in serials
        ):
            raise CredentialError("revocation serials must be a list of integers")
        if not isinstance(signature, str) or not _HEX.match(signature) or len(signature) != 128:
            raise CredentialError("revocation signature is not 64 bytes of hex")
        issued = doc.get("issued_at")
        if isinstance(issued, bool) or not isinstance(issued, (int, float)):
            raise CredentialError("revocation issued_at must be a number")
        listed = doc.get("run_id")
        if (
            not isinstance(listed, str)
            or run_name(listed) != run_name(run_id)
            or doc.get("owner_key") != owner_key
        ):
            raise CredentialError("revocation list is for another run or owner")
        revocations = cls(
            run_id=listed, serials=frozenset(serials), issued_at=float(issued), owner_key=owner_key,
            signature=bytes.fromhex(signature),
        )  # fmt: skip
        try:
            _public(owner_key).verify(revocations.signature, revocations.signed_bytes())
        except InvalidSignature:
            raise CredentialError("revocation list signature does not verify") from None
        return revocations


def revoke(owner: Ed25519PrivateKey, *, run_id: str, serials: set[int] | frozenset[int]) -> Revocations:
    unsigned = Revocations(
        run_id=run_id,
        serials=frozenset(serials),
        issued_at=round(time.time(), 3),
        owner_key=owner_public_key(owner),
    )
    return Revocations(**{**unsigned.__dict__, "signature": owner.sign(unsigned.signed_bytes())})


class Gate:
    """A run's admission rule, as one node applies it: open (no owner key), or closed.

    ``problem(peer, credential)`` is None when the peer may take part, else the reason; verified
    credentials are cached per (peer, credential) until they expire, so a busy conductor checks a
    signature once per member, not once per round.
    """

    def __init__(
        self,
        *,
        run_id: str,
        owner_key: str = "",
        own_credential: bytes = b"",
        revoked: frozenset[int] = frozenset(),
    ):
        self.run_id, self.owner_key = run_id, owner_key
        self.own_credential = own_credential
        self.revoked = revoked
        self._verified: dict[tuple[bytes, bytes], float] = {}

    @property
    def closed(self) -> bool:
        return bool(self.owner_key)

    def problem(self, peer: bytes, credential: bytes, *, now: float | None = None) -> str | None:
        if not self.closed:
            return None
        now = time.time() if now is None else now
        cached = self._verified.get((peer, credential))
        if cached is not None and cached > now:
            return None
        if not credential:
            return "this run is closed and the peer presented no credential"
        try:
            parsed = Credential.from_bytes(credential).verify(
                owner_key=self.owner_key, run_id=self.run_id, peer_id=peer, revoked=self.revoked, now=now
            )
        except CredentialError as e:
            return str(e)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[(peer, credential)] = parsed.expires_at
        return None
