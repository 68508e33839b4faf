"""Peer ids as text: libp2p's base58 (Bitcoin alphabet) of the peer id's multihash bytes.

Pure, so that the round protocol names peers without importing a libp2p stack; the same text as
hivemind's ``PeerID.to_base58`` (checked in tests/unit/test_peer_names.py).
"""

from __future__ import annotations

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def peer_name(peer: bytes) -> str:
    """The base58 text of a peer id (leading zero bytes become leading '1's)."""
    zeros = len(peer) - len(peer.lstrip(b"\0"))
    number = int.from_bytes(peer, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_ALPHABET[rest])
    return "1" * zeros + "".join(reversed(digits))


def peer_from_name(name: str) -> bytes:
    """The peer id bytes of a base58 name; ValueError on a character outside the alphabet."""
    number = 0
    for char in name:
        if char not in _INDEX:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + _INDEX[char]
    zeros = len(name) - len(name.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def short_name(peer: bytes) -> str:
    """The last 8 characters of a peer's name: enough to tell peers apart in logs."""
    return peer_name(peer)[-8:]
