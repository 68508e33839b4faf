"""Signed checkpoint pointers: the small DHT record that says "peer P serves checkpoint M of run R".

A pointer names the run, round, step, manifest hash, size, provider and expiry, and carries the
provider's libp2p public key and its signature over a canonical encoding of those fields. A reader
accepts a pointer only if the public key hashes to the provider's peer id (so nobody can publish in
another peer's name), the signature verifies, and it has not expired. Keys are Ed25519, stored in
libp2p's protobuf key format, the same file the node's daemon takes as its identity.

Pure apart from ``cryptography``: the light client imports it; no torch, hivemind or libp2p.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

POINTER_VERSION = 1
MAX_TTL_S = 7 * 24 * 3600.0
MAX_ADDRS = 8
# libp2p's crypto.proto: KeyType Ed25519 = 1; PublicKey/PrivateKey { Type = 1; Data = 2 }.
_ED25519 = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


MAX_CREDENTIAL_BYTES = 2048
"""As swarm.auth's bound (not imported: the light client reads pointers without it)."""


class PointerError(ValueError):
    """A pointer that is malformed, expired, or not signed by the peer it names."""


def _key_protobuf(key_type: int, data: bytes) -> bytes:
    # Two fields: varint Type (tag 0x08), bytes Data (tag 0x12); lengths here are < 128.
    return bytes([0x08, key_type, 0x12, len(data)]) + data


def public_key_protobuf(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return _key_protobuf(_ED25519, public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def peer_id_of(public_key: bytes) -> bytes:
    """The libp2p peer id of a protobuf-encoded public key (identity multihash up to 42 bytes)."""
    if len(public_key) <= 42:
        return bytes([0x00, len(public_key)]) + public_key
    return bytes([0x12, 0x20]) + hashlib.sha256(public_key).digest()


def _ed25519_public(public_key: bytes) -> Ed25519PublicKey:
    if len(public_key) != 36 or public_key[:4] != bytes([0x08, _ED25519, 0x12, 32]):
        raise PointerError("the pointer's public key is not an Ed25519 key in libp2p's encoding")
    return Ed25519PublicKey.from_public_bytes(public_key[4:])


# --- identity files ---------------------------------------------------------------------------


def generate_identity(path: Path, seed: bytes | None = None) -> None:
    """Write a new Ed25519 identity in libp2p's protobuf private-key format (readable by p2pd).

    ``seed`` (32 bytes) makes the key reproducible: benchmarks pair runs by giving node i of seed s
    the same peer id, hence the same data order, in every setting. Never for a real node."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.from_private_bytes(seed) if seed is not None else Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    data = _key_protobuf(_ED25519, private + public)  # go-libp2p: 64 bytes, private seed then public key
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_identity(path: Path) -> Ed25519PrivateKey | None:
    """The Ed25519 key of an identity file; None for another key type (e.g. hivemind's RSA keys)."""
    raw = path.read_bytes()
    if len(raw) == 68 and raw[:4] == bytes([0x08, _ED25519, 0x12, 64]):
        return Ed25519PrivateKey.from_private_bytes(raw[4:36])
    return None


# --- pointers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pointer:
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    provider: bytes
    expires_at: float
    addrs: tuple[str, ...] = ()
    """Multiaddrs the provider serves on (without /p2p/), so clients can reach it directly."""
    public_key: bytes = b""
    signature: bytes = b""
    credential: bytes = b""
    """In a closed run: the provider's credential from the run owner (swarm/auth.py); readers that
    know the owner key accept pointers only with a valid one for ``provider``. Signed with the rest."""

    def signed_bytes(self) -> bytes:
        doc = {
            "v": POINTER_VERSION,
            "run_id": self.run_id,
            "round": self.round,
            "global_step": self.global_step,
            "manifest_hash": self.manifest_hash,
            "total_bytes": self.total_bytes,
            "provider": self.provider.hex(),
            "expires_at": round(self.expires_at, 3),
            "addrs": list(self.addrs),
            "public_key": self.public_key.hex(),
        }
        if self.credential:  # absent from open runs' pointers, which keep their earlier signed form
            doc["credential"] = self.credential.hex()
        return b"swarm-checkpoint-pointer:" + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def signed_by(self, key: Ed25519PrivateKey) -> Pointer:
        unsigned = Pointer(
            **{
                **self.__dict__,
                "expires_at": round(self.expires_at, 3),
                "public_key": public_key_protobuf(key.public_key()),
            }
        )
        return Pointer(**{**unsigned.__dict__, "signature": key.sign(unsigned.signed_bytes())})

    def to_wire(self) -> dict[str, Any]:
        return {"v": POINTER_VERSION, **self.__dict__, "addrs": list(self.addrs)}

    @classmethod
    def from_wire(cls, raw: Any) -> Pointer:
        """Parse a DHT value; types only (``verify`` checks the rest). Raises PointerError."""
        if not isinstance(raw, dict) or raw.get("v") != POINTER_VERSION:
            raise PointerError("not a version-1 checkpoint pointer")
        kinds: dict[str, type | tuple[type, ...]] = {
            "run_id": str,
            "round": int,
            "global_step": int,
            "manifest_hash": str,
            "total_bytes": int,
            "provider": bytes,
            "expires_at": (int, float),
            "public_key": bytes,
            "signature": bytes,
        }
        values: dict[str, Any] = {}
        for name, kind in kinds.items():
            value = raw.get(name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise PointerError(f"pointer field {name!r} is missing or of the wrong type")
            if isinstance(value, (str, bytes)) and len(value) > 256:
                raise PointerError(f"pointer field {name!r} is too long")
            if isinstance(value, int) and value < 0:
                raise PointerError(f"pointer field {name!r} is negative")
            values[name] = value
        values["expires_at"] = float(values["expires_at"])
        addrs = raw.get("addrs", [])
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS:
            raise PointerError(f"pointer addrs must be a list of at most {MAX_ADDRS}")
        if not all(isinstance(a, str) and a.startswith("/") and len(a) <= 256 for a in addrs):
            raise PointerError("pointer addrs must be multiaddr strings")
        values["addrs"] = tuple(addrs)
        credential = raw.get("credential", b"")
        if not isinstance(credential, bytes) or len(credential) > MAX_CREDENTIAL_BYTES:
            raise PointerError(f"pointer credential must be at most {MAX_CREDENTIAL_BYTES} bytes")
        values["credential"] = credential
        return cls(**values)

    def verify(self, *, now: float | None = None) -> Pointer:
        """Return self if well-formed, unexpired and signed by ``provider``; else raise PointerError."""
        if not 1 <= len(self.run_id) <= 128:
            raise PointerError("pointer run id must have 1 to 128 characters")
        if not _HEX64.match(self.manifest_hash):
            raise PointerError("pointer manifest hash is not sha256 hex")
        now = time.time() if now is None else now
        if self.expires_at < now:
            raise PointerError(f"pointer expired {now - self.expires_at:.0f} s ago")
        if self.expires_at > now + MAX_TTL_S:
            raise PointerError("pointer expires implausibly far in the future")
        if peer_id_of(self.public_key) != self.provider:
            raise PointerError("pointer's public key does not belong to the provider it names")
        try:
            _ed25519_public(self.public_key).verify(self.signature, self.signed_bytes())
        except InvalidSignature:
            raise PointerError("pointer signature does not verify") from None
        return self
