"""What the node hands p2pd: relay addresses in the bytes go-multiaddr reads, and the relay's
answer to a slot reservation parsed without trusting its lengths."""

from __future__ import annotations

import pytest
from hivemind.p2p import PeerID

from swarm.relay import daemon_multiaddr, hop_status, uvarint

RELAY = "12D3KooWFchxFUuZMTBVWoCwnSdoMbvAdiWH5sJp1ryLvSESS9Qk"


def test_relay_addresses_carry_a_bare_multihash() -> None:
    text = f"/ip4/11.88.0.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    raw = daemon_multiaddr(text).to_bytes()
    multihash = PeerID.from_base58(RELAY).to_bytes()
    # ip4 (4) 11.88.0.1, tcp (6) 4001, then p2p (421) as <length><multihash>, then p2p-circuit (290)
    assert raw == bytes.fromhex("040b580001060fa1") + uvarint(421) + bytes(
        [len(multihash)]
    ) + multihash + uvarint(290)
    assert str(daemon_multiaddr(text)) == text
    assert daemon_multiaddr("/ip4/1.2.3.4/udp/5/quic-v1").to_bytes() == bytes.fromhex(
        "040102030491020005cd03"
    )


def test_the_relays_answer_is_parsed_strictly() -> None:
    reservation = bytes([0x08, 0x05]) + b"\x12\x00"  # expire 5, one empty address
    ok = bytes([0x08, 0x02, 0x1A, len(reservation)]) + reservation + bytes([0x28, 0x64])
    assert hop_status(ok) == 100
    assert hop_status(bytes([0x08, 0x02, 0x28, 0xC8, 0x01])) == 200  # RESERVATION_REFUSED
    assert hop_status(bytes([0x08, 0x02])) is None
    for bad in (bytes([0x08]), bytes([0x1A, 0x09, 0x00]), bytes([0x0D, 0, 0, 0, 0])):
        with pytest.raises(ConnectionError):
            hop_status(bad)
