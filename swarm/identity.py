"""A node's identity: its Ed25519 key file (libp2p's protobuf format, the file p2pd takes) and the
peer id it gives. A peer id of an Ed25519 key holds the public key itself (an identity multihash),
so anyone can check a signature against a peer id alone.

Pure apart from ``cryptography``: the light client and the DHT's record validator import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# libp2p's crypto.proto: KeyType Ed25519 = 1; PublicKey/PrivateKey { Type = 1; Data = 2 }.
_ED25519 = 1
_PEER_PREFIX = bytes([0x00, 0x24, 0x08, _ED25519, 0x12, 0x20])
"""An Ed25519 peer id: identity multihash (0x00, length 36) of the protobuf public key."""


class IdentityError(ValueError):
    """A key or peer id that is not Ed25519 in libp2p's encoding."""


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


def ed25519_public(public_key: bytes) -> Ed25519PublicKey:
    """The key of a protobuf-encoded Ed25519 public key; IdentityError for anything else."""
    if len(public_key) != 36 or public_key[:4] != bytes([0x08, _ED25519, 0x12, 32]):
        raise IdentityError("the public key is not an Ed25519 key in libp2p's encoding")
    return Ed25519PublicKey.from_public_bytes(public_key[4:])


def public_key_of_peer(peer: bytes) -> Ed25519PublicKey:
    """The Ed25519 key a peer id holds; IdentityError for a peer id of another kind of key."""
    if len(peer) != 38 or not peer.startswith(_PEER_PREFIX):
        raise IdentityError("the peer id is not that of an Ed25519 key")
    return Ed25519PublicKey.from_public_bytes(peer[6:])


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
