"""Peer names without libp2p give the same text as hivemind's PeerID, and read it back."""

from __future__ import annotations

import random

import pytest

from swarm.peer_names import peer_from_name, peer_name


def test_names_match_hivemind_and_round_trip() -> None:
    from hivemind.p2p import PeerID

    rng = random.Random(3)
    samples = [b"", b"\0", b"\0\0\x01", bytes(38)] + [rng.randbytes(rng.randint(1, 40)) for _ in range(200)]
    samples += [bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + rng.randbytes(32) for _ in range(50)]
    for peer in samples:
        name = PeerID(peer).to_base58()
        assert peer_name(peer) == name
        assert peer_from_name(name) == peer == PeerID.from_base58(name).to_bytes()


def test_a_name_outside_the_alphabet_is_refused() -> None:
    with pytest.raises(ValueError):
        peer_from_name("12D3KooW0OIl")
