"""Signed checkpoint pointers: the small DHT record that says "peer P serves checkpoint M of run R".

A pointer names the run, round, step, manifest hash, size, provider and expiry, and carries the
provider's libp2p public key and its signature over a canonical encoding of those fields. A reader
accepts a pointer only if the public key hashes to the provider's peer id (so nobody can publish in
another peer's name), the signature verifies, and it has not expired. Keys are Ed25519, stored in
libp2p's protobuf key format, the same file the node's daemon takes as its identity.

Pure apart from ``cryptography``: the light client imports it; no torch, hivemind or libp2p.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.identity import IdentityError, ed25519_public, peer_id_of, public_key_protobuf

POINTER_VERSION = 1
MAX_TTL_S = 7 * 24 * 3600.0
MAX_ADDRS = 8
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


MAX_CREDENTIAL_BYTES = 2048
"""As swarm.auth's bound (not imported: the light client reads pointers without it)."""


class PointerError(ValueError):
    """A pointer that is malformed, expired, or not signed by the peer it names."""


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
        now = time.time() if now is None else now
        if self.expires_at < now:
            raise PointerError(f"pointer expired {now - self.expires_at:.0f} s ago")
        if self.expires_at > now + MAX_TTL_S:
            raise PointerError("pointer expires implausibly far in the future")
        return self.check_signature()

    def check_signature(self) -> Pointer:
        """Return self if well-formed and signed by ``provider``, whatever the time (the DHT's record
        validator: a record must not turn invalid as it ages); else raise PointerError."""
        if not 1 <= len(self.run_id) <= 128:
            raise PointerError("pointer run id must have 1 to 128 characters")
        if not _HEX64.match(self.manifest_hash):
            raise PointerError("pointer manifest hash is not sha256 hex")
        if peer_id_of(self.public_key) != self.provider:
            raise PointerError("pointer's public key does not belong to the provider it names")
        try:
            ed25519_public(self.public_key).verify(self.signature, self.signed_bytes())
        except IdentityError as e:
            raise PointerError(f"pointer's {e}") from None
        except InvalidSignature:
            raise PointerError("pointer signature does not verify") from None
        return self
