"""Peer ids as text: libp2p's base58 (Bitcoin alphabet) of the peer id's multihash bytes.

Free of any libp2p stack, so that the round protocol, the node and the light client name peers the
same way; the same text as hivemind's ``PeerID.to_base58`` (checked in tests/unit/test_peer_names.py).
"""

from __future__ import annotations

import base58


def peer_name(peer: bytes) -> str:
    """The base58 text of a peer id (leading zero bytes become leading '1's)."""
    return base58.b58encode(peer).decode("ascii")


def peer_from_name(name: str) -> bytes:
    """The peer id bytes of a base58 name; ValueError on a character outside the alphabet."""
    return base58.b58decode(name)


def short_name(peer: bytes) -> str:
    """The last 8 characters of a peer's name: enough to tell peers apart in logs."""
    return peer_name(peer)[-8:]
