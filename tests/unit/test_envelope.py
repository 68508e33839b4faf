"""Signed DHT records: an envelope opens only under its own key, subkey, family rule and lifetime.

These are the checks every node's DHT runs on every record it stores, serves or receives
(``swarm.record_validator``), so each test here is an attack an outsider could try on the DHT.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hivemind.dht.routing import DHTID

from swarm.dht.envelope import EnvelopeError, key_id, open_envelope, seal
from swarm.dht.pointer import Pointer
from swarm.dht.records import (
    MAX_PARAM_COUNT,
    CoordinatorRecord,
    MemberRecord,
    RunSpec,
    pinned_run_id,
    record_key,
)
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name
from swarm.run_settings import RunSettings

NOW = time.time()
MEMBERS = record_key("run", "members")
CHECKPOINTS = record_key("run", "checkpoints")


def _run_of(key: Ed25519PrivateKey) -> str:
    """The pinned id of run "run" created by ``key``'s peer."""
    return pinned_run_id("run", peer_id_of(public_key_protobuf(key.public_key())))


def _key(tmp_path: Path, name: str) -> tuple[Ed25519PrivateKey, str]:
    generate_identity(tmp_path / name)
    key = load_identity(tmp_path / name)
    assert key is not None
    return key, peer_name(peer_id_of(public_key_protobuf(key.public_key())))


def _open(key: str, subkey: str | None, value: Any, *, expiration: float | None = None, now: float = NOW):
    header = value.get("h") if isinstance(value, dict) else None
    expires_at = msgpack.unpackb(header)[2] if isinstance(header, bytes) and header != b"\xc1" else NOW + 10
    return open_envelope(
        key=key_id(key), subkey=subkey, value=value, expiration_time=expiration or expires_at, now=now
    )


def _heartbeat(**changes: Any) -> dict[str, Any]:
    return MemberRecord(round=3, global_step=30, local_steps_per_round=10.0, **changes).to_wire()


def test_the_key_id_is_hivemind_s() -> None:
    for key in (MEMBERS, record_key("r" * 64, "checkpoints")):
        assert key_id(key) == DHTID.generate(key).to_bytes()


def test_a_member_s_heartbeat_opens_and_names_its_writer(tmp_path: Path) -> None:
    key, me = _key(tmp_path, "me.key")
    sealed = seal(key, key=MEMBERS, subkey=me, payload=_heartbeat(), expires_at=NOW + 15)
    envelope = _open(MEMBERS, me, sealed)
    assert (envelope.run_id, envelope.family.name, envelope.payload) == ("run", "members", _heartbeat())
    assert peer_name(envelope.signer) == me and envelope.fresh(NOW) and not envelope.fresh(NOW + 16)
    # Expired by the reader's clock, it still opens: the validator never refuses a record for its age.
    assert _open(MEMBERS, me, sealed, now=NOW + 3600).payload == _heartbeat()


def test_nobody_writes_a_heartbeat_or_a_leaving_notice_in_another_member_s_name(tmp_path: Path) -> None:
    """The attack that forked x' of a closed run: an outsider's copy of a member's heartbeat, with
    ``leaving`` set and a long life, under that member's own subkey."""
    mallory, _ = _key(tmp_path, "mallory.key")
    victim_key, victim = _key(tmp_path, "victim.key")
    forged = seal(mallory, key=MEMBERS, subkey=victim, payload=_heartbeat(leaving=True), expires_at=NOW + 600)
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        _open(MEMBERS, victim, forged)
    genuine = seal(victim_key, key=MEMBERS, subkey=victim, payload=_heartbeat(), expires_at=NOW + 15)
    family, run_id, expires_at, payload, public = msgpack.unpackb(genuine["h"])
    payload["leaving"] = True  # the member's own signature over the header, with leaving set
    tampered = {
        **genuine,
        "h": msgpack.packb([family, run_id, expires_at, payload, public], use_bin_type=True),
    }
    assert tampered != genuine
    with pytest.raises(EnvelopeError, match="signature does not verify"):
        _open(MEMBERS, victim, tampered)
    with pytest.raises(EnvelopeError, match="may live at most"):  # nor its own, for an hour
        _open(
            MEMBERS,
            victim,
            seal(victim_key, key=MEMBERS, subkey=victim, payload=_heartbeat(), expires_at=NOW + 3600),
        )


def test_a_record_opens_only_under_its_own_key_subkey_shape_and_expiry(tmp_path: Path) -> None:
    key, me = _key(tmp_path, "me.key")
    _, other = _key(tmp_path, "other.key")
    sealed = seal(key, key=MEMBERS, subkey=me, payload=_heartbeat(), expires_at=NOW + 15)
    with pytest.raises(EnvelopeError, match="another key"):
        _open(record_key("other-run", "members"), me, sealed)
    with pytest.raises(EnvelopeError, match="signature"):
        _open(MEMBERS, other, sealed)
    with pytest.raises(EnvelopeError, match="wrong shape"):
        _open(MEMBERS, None, sealed)
    with pytest.raises(EnvelopeError, match="longer than its envelope"):
        _open(MEMBERS, me, sealed, expiration=NOW + 16)
    address = CoordinatorRecord(address="coord.example.org:50051").to_wire()
    ours = record_key(_run_of(key), "coordinator")
    coordinator = seal(key, key=ours, subkey=None, payload=address, expires_at=NOW + 60)
    assert peer_name(_open(ours, None, coordinator).signer) == me
    with pytest.raises(EnvelopeError, match="wrong shape"):  # a subkey under a regular key
        _open(ours, me, seal(key, key=ours, subkey=me, payload=address, expires_at=NOW + 60))


def test_only_a_run_s_creator_signs_its_spec_and_coordinator_address(tmp_path: Path) -> None:
    """The run id pins its creator (``name.pin``): a stranger's longer-lived spec or coordinator
    address under that run's keys is refused, and so is any under a run id that pins nobody."""
    creator, _ = _key(tmp_path, "creator.key")
    mallory, _ = _key(tmp_path, "mallory.key")
    run_id = _run_of(creator)
    spec = _spec()
    address = CoordinatorRecord(address="coord.example.org:50051").to_wire()
    for family, payload in (("config", spec), ("coordinator", address)):
        key = record_key(run_id, family)
        genuine = seal(creator, key=key, subkey=None, payload=payload, expires_at=NOW + 3600)
        assert _open(key, None, genuine).payload == payload  # and as stored again by a member: same bytes
        with pytest.raises(EnvelopeError, match="another than its creator"):
            _open(key, None, seal(mallory, key=key, subkey=None, payload=payload, expires_at=NOW + 6 * 86400))
        with pytest.raises(EnvelopeError, match="not pinned"):
            _open(record_key("run", family), None, seal(creator, key=record_key("run", family), subkey=None,
                                                        payload=payload, expires_at=NOW + 60))  # fmt: skip
        # The run of the same name that mallory creates is another run, with other keys.
        theirs = record_key(_run_of(mallory), family)
        assert theirs != key
        assert _open(
            theirs, None, seal(mallory, key=theirs, subkey=None, payload=payload, expires_at=NOW + 60)
        )


def _spec() -> dict[str, Any]:
    return RunSpec(
        **asdict(RunSettings()), model_hash="m" * 64, initial_digest="", data_hash="d" * 64, software="s/2",
        param_count=MAX_PARAM_COUNT,
    ).to_wire()  # fmt: skip


def test_a_signed_record_with_a_malformed_payload_is_refused(tmp_path: Path) -> None:
    key, me = _key(tmp_path, "me.key")
    for family, subkey, payload in (
        (MEMBERS, me, {**_heartbeat(), "round": -1}),
        (record_key(_run_of(key), "config"), None, {"v": 1, "model": "tiny"}),
        (record_key(_run_of(key), "coordinator"), None, {"v": 1, "address": "169.254.169.254"}),
    ):
        with pytest.raises(EnvelopeError, match="payload"):
            _open(family, subkey, seal(key, key=family, subkey=subkey, payload=payload, expires_at=NOW + 60))


def test_malformed_old_and_oversized_records_are_refused(tmp_path: Path) -> None:
    key, me = _key(tmp_path, "me.key")
    with pytest.raises(EnvelopeError, match="version 1"):
        _open(MEMBERS, me, {"v": 1, **_heartbeat()})
    for value in ("text", {"v": 2, "h": "str", "s": b""}, {"v": 2, "h": b"\xc1", "s": b""}, {"v": 2}):
        with pytest.raises(EnvelopeError):
            _open(MEMBERS, me, value)
    small = seal(key, key=MEMBERS, subkey=me, payload=_heartbeat(), expires_at=NOW + 15)
    huge = {**small, "s": small["s"] + b"x" * 20_000}  # a writer that did not use seal
    with pytest.raises(EnvelopeError, match="over"):
        _open(MEMBERS, me, huge)


def test_a_pointer_is_stored_only_under_its_provider_s_subkey_and_expiry(tmp_path: Path) -> None:
    provider_key, provider = _key(tmp_path, "provider.key")
    mallory_key, mallory = _key(tmp_path, "mallory.key")
    pointer = Pointer(
        run_id="run",
        round=12,
        global_step=120,
        manifest_hash="ab" * 32,
        total_bytes=1234,
        provider=peer_id_of(public_key_protobuf(provider_key.public_key())),
        expires_at=NOW + 600,
    ).signed_by(provider_key)
    wire = pointer.to_wire()
    # Anyone may store the provider's own pointer (members relay the archive's): it opens.
    sealed = seal(None, key=CHECKPOINTS, subkey=f"{provider}/12", payload=wire, expires_at=pointer.expires_at)
    assert _open(CHECKPOINTS, f"{provider}/12", sealed).signer == pointer.provider
    for subkey in (f"{mallory}/12", f"{provider}/13"):  # not under another provider's or round's subkey
        with pytest.raises(EnvelopeError, match="another provider's or round's"):
            _open(
                CHECKPOINTS,
                subkey,
                seal(None, key=CHECKPOINTS, subkey=subkey, payload=wire, expires_at=pointer.expires_at),
            )
    with pytest.raises(EnvelopeError, match="outlives"):
        _open(
            CHECKPOINTS,
            f"{provider}/12",
            seal(None, key=CHECKPOINTS, subkey=f"{provider}/12", payload=wire, expires_at=NOW + 7000),
        )
    forged = {**wire, "round": 13}
    with pytest.raises(EnvelopeError, match="signature"):
        _open(
            CHECKPOINTS,
            f"{provider}/13",
            seal(
                mallory_key,
                key=CHECKPOINTS,
                subkey=f"{provider}/13",
                payload=forged,
                expires_at=pointer.expires_at,
            ),
        )


def test_a_pull_learns_the_parameter_count_only_from_the_creators_spec(tmp_path: Path) -> None:
    """The node a light client asks passes on the run spec's envelope; the client reads the model's
    parameter count from it (to bound the download) only when the run's creator signed it."""
    from swarm.light.client import spec_param_count

    creator, _ = _key(tmp_path, "creator.key")
    mallory, _ = _key(tmp_path, "mallory.key")
    run = _run_of(creator)
    key = record_key(run, "config")
    for signer, expected in ((creator, MAX_PARAM_COUNT), (mallory, None)):
        sealed = seal(signer, key=key, subkey=None, payload=_spec(), expires_at=time.time() + 60)
        assert spec_param_count(msgpack.packb(sealed, use_bin_type=True), run) == expected
    for raw in (b"", b"\xc1", msgpack.packb({"v": 2, "h": b"x", "s": b""})):
        assert spec_param_count(raw, run) is None


def test_a_writer_hears_that_its_record_is_over_its_familys_bound(tmp_path: Path) -> None:
    """Every node's validator refuses an oversized record without a word; the writer is told."""
    key, me = _key(tmp_path, "me.key")
    with pytest.raises(EnvelopeError, match="over its bound"):
        seal(key, key=MEMBERS, subkey=me, payload={"x": "a" * 20_000}, expires_at=NOW + 15)
