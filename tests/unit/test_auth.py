"""Closed-run credentials: issued by the owner's key, bound to one peer and run, expiring, revocable;
and the light commands that make keys, issue and revoke them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.auth import Credential, CredentialError, Revocations, issue, owner_public_key, revoke
from swarm.dht.records import pinned_run_id

PEER = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))
OTHER = b"\x00\x24\x08\x01\x12\x20" + bytes(range(1, 33))


def test_a_credential_lets_exactly_its_peer_into_its_run_until_it_expires() -> None:
    owner = Ed25519PrivateKey.generate()
    key = owner_public_key(owner)
    credential = Credential.from_bytes(
        issue(owner, run_id="r", peer_id=PEER, valid_s=3600, serial=7).to_bytes()
    )
    assert credential.verify(owner_key=key, run_id="r", peer_id=PEER).serial == 7
    # The owner names the run before its first node pins the id to its key (name.pin).
    assert credential.verify(owner_key=key, run_id=pinned_run_id("r", OTHER), peer_id=PEER).serial == 7
    cases = [
        ({"owner_key": owner_public_key(Ed25519PrivateKey.generate())}, "another owner"),
        ({"run_id": "other"}, "run"),
        ({"run_id": pinned_run_id("other", OTHER)}, "run"),
        ({"peer_id": OTHER}, "another peer"),
        ({"now": time.time() + 7200}, "expired"),
        ({"revoked": frozenset({7})}, "revoked"),
    ]
    for change, message in cases:
        kwargs = {"owner_key": key, "run_id": "r", "peer_id": PEER, **change}
        with pytest.raises(CredentialError, match=message):
            credential.verify(**kwargs)


def test_a_forged_or_altered_credential_does_not_verify() -> None:
    owner, mallory = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key = owner_public_key(owner)
    genuine = issue(owner, run_id="r", peer_id=PEER, valid_s=3600)
    # Mallory signs her own credential but names the run's owner key.
    forged = issue(mallory, run_id="r", peer_id=OTHER, valid_s=3600)
    forged = Credential(**{**forged.__dict__, "owner_key": key})
    with pytest.raises(CredentialError, match="signature"):
        forged.verify(owner_key=key, run_id="r", peer_id=OTHER)
    # The genuine one re-bound to another peer, or extended.
    for change in ({"peer_id": OTHER}, {"expires_at": genuine.expires_at + 86400}):
        altered = Credential(**{**genuine.__dict__, **change})
        with pytest.raises(CredentialError, match="signature"):
            altered.verify(owner_key=key, run_id="r", peer_id=altered.peer_id)


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b"{", b'{"v": 2}', b'{"v": 1, "run_id": 5}', b"x" * 5000,
     b'{"v":1,"run_id":"r","peer_id":"zz","expires_at":1,"serial":1,"owner_key":"00","signature":"00"}',
     b'{"v":1,"run_id":"r","peer_id":"00","expires_at":1,"serial":-1,"owner_key":"00","signature":"00"}',
     b'{"v":1,"run_id":"r","peer_id":"00","expires_at":true,"serial":1,"owner_key":"00","signature":"00"}'],
)  # fmt: skip
def test_malformed_credentials_are_refused(raw: bytes) -> None:
    with pytest.raises(CredentialError):
        Credential.from_bytes(raw)


def test_revocation_lists_are_the_owners_and_round_trip() -> None:
    owner = Ed25519PrivateKey.generate()
    key = owner_public_key(owner)
    raw = revoke(owner, run_id="r", serials={3, 5}).to_bytes()
    assert Revocations.from_bytes(raw, owner_key=key, run_id="r").serials == {3, 5}
    assert Revocations.from_bytes(raw, owner_key=key, run_id=pinned_run_id("r", PEER)).serials == {3, 5}
    with pytest.raises(CredentialError, match="another run"):
        Revocations.from_bytes(raw, owner_key=key, run_id="s")
    doc = json.loads(raw)
    doc["serials"] = [3]  # un-revoking 5 without the owner's key
    with pytest.raises(CredentialError, match="signature"):
        Revocations.from_bytes(json.dumps(doc).encode(), owner_key=key, run_id="r")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=60)


def test_the_owner_flow_on_the_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base58

    key_file = tmp_path / "owner.key"
    made = _cli("owner-key", "--out", str(key_file))
    assert made.returncode == 0, made.stderr
    public = made.stdout.split("public key: ")[1].strip()
    assert _cli("owner-key", "--out", str(key_file)).returncode == 2  # never overwritten
    peer = base58.b58encode(PEER).decode()
    issued = _cli("credential", "issue", "--owner-key", str(key_file), "--run-id", "r", "--peer-id", peer,
                  "--days", "2", "--out", str(tmp_path / "cred.json"))  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    credential = Credential.from_bytes((tmp_path / "cred.json").read_bytes())
    credential.verify(owner_key=public, run_id="r", peer_id=PEER)
    assert credential.expires_at == pytest.approx(time.time() + 2 * 86400, abs=120)
    listing = tmp_path / "revoked.json"
    for serial in (credential.serial, 99):
        revoked = _cli("credential", "revoke", "--owner-key", str(key_file), "--run-id", "r",
                       "--serial", str(serial), "--list", str(listing))  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
    serials = Revocations.from_bytes(listing.read_bytes(), owner_key=public, run_id="r").serials
    assert serials == {credential.serial, 99}
    with pytest.raises(CredentialError, match="revoked"):
        credential.verify(owner_key=public, run_id="r", peer_id=PEER, revoked=serials)


def test_a_gate_is_open_without_an_owner_and_checks_credentials_when_closed() -> None:
    from swarm.auth import Gate

    assert Gate(run_id="r").problem(PEER, b"") is None
    owner = Ed25519PrivateKey.generate()
    gate = Gate(run_id="r", owner_key=owner_public_key(owner), revoked=frozenset({9}))
    good = issue(owner, run_id="r", peer_id=PEER, valid_s=60).to_bytes()
    assert gate.problem(PEER, good) is None
    assert gate.problem(PEER, good) is None  # cached
    assert "expired" in (gate.problem(PEER, good, now=time.time() + 120) or "")
    assert "no credential" in (gate.problem(PEER, b"") or "")
    assert "revoked" in (
        gate.problem(PEER, issue(owner, run_id="r", peer_id=PEER, valid_s=60, serial=9).to_bytes()) or ""
    )


def test_run_specs_and_heartbeats_without_the_new_fields_still_parse() -> None:
    from swarm.dht.records import MemberRecord, RecordError, RunSpec
    from tests.unit.test_records import SPEC

    wire = SPEC.to_wire()
    del wire["owner_key"]
    assert RunSpec.from_wire(wire).owner_key == ""
    with pytest.raises(RecordError, match="--run-owner has a malformed value"):
        RunSpec.from_wire({**SPEC.to_wire(), "owner_key": "nothex"})
    heartbeat = MemberRecord(round=1, global_step=1, local_steps_per_round=1.0).to_wire()
    del heartbeat["credential"]
    assert MemberRecord.from_wire(heartbeat).credential == b""
    with pytest.raises(RecordError):
        MemberRecord.from_wire({**heartbeat, "credential": b"x" * 5000})
