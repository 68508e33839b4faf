"""Signed checkpoint pointers: only the provider itself can publish one in its name."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from swarm.dht.pointer import Pointer, PointerError
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf


def _key(tmp_path: Path, name: str = "id.key"):
    generate_identity(tmp_path / name)
    key = load_identity(tmp_path / name)
    assert key is not None
    return key


def _pointer(provider: bytes) -> Pointer:
    return Pointer(
        addrs=("/ip4/127.0.0.1/tcp/4001",),
        run_id="run",
        round=12,
        global_step=120,
        manifest_hash="ab" * 32,
        total_bytes=1234,
        provider=provider,
        expires_at=time.time() + 600,
    )


def test_a_signed_pointer_verifies_and_any_change_breaks_it(tmp_path: Path) -> None:
    key = _key(tmp_path)
    me = peer_id_of(public_key_protobuf(key.public_key()))
    signed = _pointer(me).signed_by(key)
    assert signed.verify() is signed
    for change in (dict(round=13), dict(manifest_hash="cd" * 32), dict(total_bytes=1), dict(run_id="other")):
        with pytest.raises(PointerError, match="signature"):
            replace(signed, **change).verify()


def test_pointers_in_another_peers_name_expired_or_malformed_are_refused(tmp_path: Path) -> None:
    mine, theirs = _key(tmp_path, "a.key"), _key(tmp_path, "b.key")
    victim = peer_id_of(public_key_protobuf(theirs.public_key()))
    with pytest.raises(PointerError, match="does not belong"):
        _pointer(victim).signed_by(mine).verify()
    me = peer_id_of(public_key_protobuf(mine.public_key()))
    with pytest.raises(PointerError, match="expired"):
        replace(_pointer(me), expires_at=time.time() - 5).signed_by(mine).verify()
    with pytest.raises(PointerError, match="future"):
        replace(_pointer(me), expires_at=time.time() + 1e9).signed_by(mine).verify()
    with pytest.raises(PointerError, match="sha256"):
        replace(_pointer(me), manifest_hash="nothex").signed_by(mine).verify()
    with pytest.raises(PointerError, match="Ed25519"):
        replace(
            _pointer(me).signed_by(mine),
            public_key=b"\x08\x00\x12\x03abc",
            provider=peer_id_of(b"\x08\x00\x12\x03abc"),
        ).verify()


def test_identity_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    generate_identity(path)
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        generate_identity(path)
    (tmp_path / "rsa.key").write_bytes(b"\x08\x00\x12\x05hello")
    assert load_identity(tmp_path / "rsa.key") is None


def test_a_seeded_identity_is_reproducible(tmp_path: Path) -> None:
    seed = bytes(range(32))
    generate_identity(tmp_path / "a.key", seed)
    generate_identity(tmp_path / "b.key", seed)
    generate_identity(tmp_path / "c.key", bytes(32))
    assert (tmp_path / "a.key").read_bytes() == (tmp_path / "b.key").read_bytes()
    assert (tmp_path / "a.key").read_bytes() != (tmp_path / "c.key").read_bytes()
    key = load_identity(tmp_path / "a.key")
    assert key is not None and key.private_bytes_raw() == seed


def test_pointers_travel_as_plain_dicts_and_bad_ones_are_refused(tmp_path: Path) -> None:
    key = _key(tmp_path)
    signed = _pointer(peer_id_of(public_key_protobuf(key.public_key()))).signed_by(key)
    assert Pointer.from_wire(signed.to_wire()).verify() == signed
    for bad in (None, [], {"v": 2}, {**signed.to_wire(), "round": "1"}, {**signed.to_wire(), "round": True},
                {**signed.to_wire(), "run_id": "x" * 300}, {**signed.to_wire(), "total_bytes": -1},
                {**signed.to_wire(), "addrs": "/ip4/1.2.3.4/tcp/1"}, {**signed.to_wire(), "addrs": ["x"] },
                {**signed.to_wire(), "addrs": ["/ip4/1.2.3.4/tcp/1"] * 9}):  # fmt: skip
        with pytest.raises(PointerError):
            Pointer.from_wire(bad)


def test_a_closed_runs_pointer_carries_the_providers_credential_under_its_signature(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from swarm.auth import Gate, issue, owner_public_key
    from swarm.checkpoint.wire import pointer_from_pb, pointer_to_pb

    key = _key(tmp_path)
    provider = peer_id_of(public_key_protobuf(key.public_key()))
    owner = Ed25519PrivateKey.generate()
    credential = issue(owner, run_id="run", peer_id=provider, valid_s=600).to_bytes()
    pointer = replace(_pointer(provider), credential=credential).signed_by(key)
    # Through the DHT's form and the Latest answer's protobuf, unchanged and still verifying.
    for copy in (Pointer.from_wire(pointer.to_wire()), pointer_from_pb(pointer_to_pb(pointer))):
        assert copy.verify() == pointer
    gate = Gate(run_id="run", owner_key=owner_public_key(owner))
    assert gate.problem(pointer.provider, pointer.credential) is None
    # Nobody can swap the credential (the signature covers it), and one without is refused by a gate.
    other = issue(owner, run_id="run", peer_id=provider, valid_s=300).to_bytes()
    with pytest.raises(PointerError, match="signature"):
        replace(pointer, credential=other).verify()
    bare = _pointer(provider).signed_by(key)
    assert bare.verify() == bare and gate.problem(bare.provider, bare.credential) is not None
    with pytest.raises(PointerError, match="credential"):
        Pointer.from_wire({**pointer.to_wire(), "credential": b"x" * 5000})
