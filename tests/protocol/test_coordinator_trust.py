"""An outsider against the coordinator's writes, through the real gRPC server on loopback.

Each attack of issue 29 that went through before (forged credit for another peer, a made-up run, a
Prometheus target at the cloud metadata address, fake checkpoints evicting the real one, manifests
filling the disk, a flood from one address, a closed run written without a credential, a replayed
write) is tried here and must fail with a clear status, record nothing, and be counted by reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.archive import Archiver
from coordinator.client import CoordinatorClient
from coordinator.core import Limits, ServedRun
from coordinator.limits import Rate
from coordinator.writes import REPORTS, Write, WriteRefused, open_write, scrape_target, sign_write
from swarm.auth import issue, owner_public_key
from swarm.checkpoint.manifest import build_manifest
from swarm.dht.envelope import EnvelopeError, key_id, open_envelope, seal
from swarm.dht.records import record_key
from swarm.peer_names import peer_from_name
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
from tests.protocol.coordinator_support import KEYS, PEERS, RUN, Served, checkpoint_files, pinned, report
from tests.protocol.test_coordinator_api import announcement, code_of

A, B, C, MALLORY = PEERS["peerA"], PEERS["peerB"], PEERS["peerC"], PEERS["mallory"]


def rejected(served: Served, reason: str) -> float:
    value = served.metrics.registry.get_sample_value("swarm_coordinator_rejected_total", {"reason": reason})
    return value or 0.0


def as_peer(served: Served, nickname: str) -> CoordinatorClient:
    return CoordinatorClient(served.address, key=KEYS[nickname])


def test_no_one_can_write_another_peers_credit(served: Served) -> None:
    served.client.report(report("peerA", range(1, 2)))
    with as_peer(served, "mallory") as mallory:
        # Mallory's own key, a request naming peerA: the body may name only its writer.
        forged = report("peerA", range(2, 12))
        assert code_of(lambda: mallory.report(forged)) == grpc.StatusCode.INVALID_ARGUMENT
        # A write that claims to be peerA's, signed by Mallory: the signature is not peerA's.
        signed = mallory.signed(RUN, REPORTS, forged.SerializeToString())
        signed.peer_id = A
        call = mallory._stub.ReportMetrics
        assert code_of(lambda: call(signed, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        # Peer A's signed bytes, with a body changed after signing.
        served.client.key = KEYS["peerA"]
        genuine = served.client.signed(RUN, REPORTS, report("peerA", range(2, 3)).SerializeToString())
        genuine.header = genuine.header.replace(b"committed", b"committeD")
        assert code_of(lambda: call(genuine, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    (peer,) = served.client.peers(RUN)
    assert (peer.peer_id, peer.rounds) == (A, 1), "a forged write changed peer A's credit"
    assert rejected(served, "signature") == 2 and rejected(served, "invalid") == 1


def test_a_write_in_a_run_the_coordinator_does_not_serve_records_nothing(served: Served) -> None:
    for run in ("unpinned-run", pinned("other-run"), RUN + "x"):
        request = report("peerA", range(1, 3))
        request.run_id = run
        assert code_of(lambda r=request: served.client.report(r)) == grpc.StatusCode.NOT_FOUND, run
    assert served.store.counts()["runs"] == 0 and served.store.runs() == []
    assert rejected(served, "unserved_run") == 3


def test_a_replayed_or_long_lived_write_is_refused(served: Served) -> None:
    body = report("peerA", range(1, 2)).SerializeToString()
    call = served.client._stub.ReportMetrics
    for now in (time.time() - 3600, time.time() + 3600):  # expired; signed to live an hour
        write = sign_write(KEYS["peerA"], run_id=RUN, family=REPORTS, body=body, now=now)
        signed = pb.SignedWrite(
            run_id=write.run_id, peer_id=write.peer_id, header=write.header, signature=write.signature
        )
        assert code_of(lambda s=signed: call(s, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    assert served.store.counts()["reports"] == 0


def test_prometheus_is_never_sent_to_an_address_a_report_names(served: Served) -> None:
    # The report names the metadata service; the target is where it came from (loopback), its port.
    served.client.report(report("peerA", range(1, 2), metrics_url="169.254.169.254:80"))
    assert json.loads(served.get("/sd")) == [{"targets": ["127.0.0.1:80"], "labels": {"run": RUN}}]
    # Nodes whose connections come from addresses never to scrape have no target at all.
    for source in ("ipv4:169.254.169.254:4000", "ipv4:0.0.0.0:4000", "ipv6:[fe80::1]:4000",
                   "ipv6:[::]:4000", "ipv4:224.0.0.1:4000", "ipv6:[fd00:ec2::254]:4000",
                   "ipv4:100.100.100.200:4000", "unix:/tmp/socket", "ipv6:[::ffff:169.254.169.254]:1"):  # fmt: skip
        assert scrape_target(source, "10.0.0.1:9100") == "", source
    assert scrape_target("ipv4:203.0.113.7:4000", "10.0.0.1:9100") == "203.0.113.7:9100"
    assert scrape_target("ipv6:[2001:db8::7]:4000", "x:9100") == "[2001:db8::7]:9100"
    assert scrape_target("ipv4:203.0.113.7:4000", "10.0.0.1:0") == ""


def _other_manifest(request: pb.AnnounceCheckpointRequest, step: int) -> pb.AnnounceCheckpointRequest:
    """The announcement of another manifest of the same round (its global step differs)."""
    files = checkpoint_files(f"step {step}")
    manifest = build_manifest(
        files, run_id=request.run_id, round=request.round, global_step=step, chunk_size=1024
    )
    out = pb.AnnounceCheckpointRequest()
    out.CopyFrom(request)
    out.global_step, out.manifest_hash = step, manifest.hash
    out.total_bytes, out.manifest = manifest.total_bytes, manifest.to_bytes()
    return out


def test_fake_checkpoints_cannot_evict_nor_replace_the_real_one(tmp_path: Path) -> None:
    served = Served(tmp_path / "c.db", limits=Limits(manifests_per_round=2))
    try:
        c = served.client
        for peer in ("peerA", "peerB", "peerC"):
            c.report(report(peer, range(1, 11)))
        real = announcement(10, "peerA")
        assert c.announce(real).new_checkpoint and not c.announce(announcement(10, "peerB")).new_checkpoint
        # An outsider that never reported is no member: it may announce nothing.
        failed = grpc.StatusCode.FAILED_PRECONDITION
        assert code_of(lambda: c.announce(_other_manifest(announcement(9, "mallory"), 1))) == failed
        # As a member (a key costs nothing): one manifest per round, none past what members attest.
        c.report(report("mallory", range(1, 11)))
        codes = {}
        for rnd in range(1, 16):
            fake = _other_manifest(announcement(rnd, "mallory"), 1000 + rnd)
            try:
                c.announce(fake)
                codes[rnd] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                codes[rnd] = e.code()
        assert all(codes[r] == grpc.StatusCode.OK for r in range(1, 13)), codes
        assert all(codes[r] == failed for r in range(13, 16)), codes  # members attest round 10
        second = _other_manifest(announcement(10, "mallory"), 2000)
        assert code_of(lambda: c.announce(second)) == grpc.StatusCode.INVALID_ARGUMENT
        # A third manifest for round 10 (from another member) is over the run's cap of two.
        third = _other_manifest(announcement(10, "peerC"), 3000)
        assert code_of(lambda: c.announce(third)) == grpc.StatusCode.RESOURCE_EXHAUSTED

        # The real checkpoint stays, is the latest the members attest, and is the one archived.
        assert c.checkpoint(RUN).checkpoint.manifest_hash == real.manifest_hash
        assert c.run_info(RUN).latest_checkpoint.manifest_hash == real.manifest_hash
        assert real.manifest_hash in {x.manifest_hash for x in c.checkpoints(RUN, limit=1000)}
        attested = served.store.attested_checkpoint(RUN)
        assert attested is not None and attested.manifest_hash == real.manifest_hash
        for reason, count in (("not_member", 1), ("ahead", 3), ("conflicting", 1), ("manifest_cap", 1)):
            assert rejected(served, reason) == count, reason
    finally:
        served.close()


def test_manifests_cannot_fill_the_disk(tmp_path: Path) -> None:
    served = Served(tmp_path / "c.db", limits=Limits(manifest_bytes_per_run=64 * 1024))
    try:
        c = served.client
        c.report(report("peerA", range(1, 101)))
        outcomes = []
        for rnd in range(1, 101):
            files = checkpoint_files(f"round {rnd}", 6400)
            manifest = build_manifest(files, run_id=RUN, round=rnd, global_step=rnd * 2, chunk_size=32)
            try:
                c.announce(announcement(rnd, "peerA", manifest=manifest.to_bytes(), manifest_hash=manifest.hash,
                                        total_bytes=manifest.total_bytes))  # fmt: skip
                outcomes.append("ok")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
                outcomes.append("refused")
        assert "ok" in outcomes and outcomes[-1] == "refused"
        assert served.store.manifest_bytes(RUN) <= 64 * 1024
        assert rejected(served, "manifest_bytes") == outcomes.count("refused")
    finally:
        served.close()


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(per_address=Rate(rate=0.001, burst=5)), "rate_address"),
        (Limits(per_run=Rate(rate=0.001, burst=5)), "rate_run"),
    ],
)
def test_a_flood_is_refused_by_rate(tmp_path: Path, limits: Limits, reason: str) -> None:
    served = Served(tmp_path / "c.db", limits=limits)
    try:
        codes = []
        for r in range(1, 9):  # new keys would not help: the address and the run are charged
            nickname = ("peerA", "peerB", "peerC", "mallory")[r % 4]
            try:
                served.client.report(report(nickname, range(r, r + 1)))
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert served.store.counts()["reports"] == 5 and rejected(served, reason) == 3
    finally:
        served.close()


def test_a_run_holds_a_bounded_number_of_peers(tmp_path: Path) -> None:
    served = Served(tmp_path / "c.db", limits=Limits(peers_per_run=2))
    try:
        c = served.client
        c.report(report("peerA", range(1, 2)))
        c.report(report("peerB", range(1, 2)))
        assert code_of(lambda: c.report(report("peerC", range(1, 2)))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.report(report("peerA", range(2, 3))).recorded == 1  # the peers it holds go on
        assert rejected(served, "peer_cap") == 1
    finally:
        served.close()


def test_a_closed_runs_writes_carry_the_writers_credential(tmp_path: Path) -> None:
    owner = Ed25519PrivateKey.generate()
    closed = pinned("closed-run")
    served = Served(tmp_path / "c.db", runs=(ServedRun(closed, owner_key=owner_public_key(owner)),))
    try:
        request = report("peerA", range(1, 2))
        request.run_id = closed
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: served.client.report(request)) == denied  # none
        for_b = issue(owner, run_id=closed, peer_id=peer_from_name(B), valid_s=3600).to_bytes()
        for_a = issue(owner, run_id=closed, peer_id=peer_from_name(A), valid_s=3600).to_bytes()
        served.client.credential = for_b
        assert code_of(lambda: served.client.report(request)) == denied  # another peer's
        served.client.credential = for_a
        assert served.client.report(request).recorded == 1
        assert rejected(served, "credential") == 2
    finally:
        served.close()


def test_the_dht_refuses_a_write_and_the_coordinator_a_dht_record() -> None:
    """A value signed for one place is worth nothing in the other."""
    write = sign_write(KEYS["peerA"], run_id=RUN, family=REPORTS, body=b"\x0a\x01x")
    with pytest.raises(EnvelopeError, match="no family that may be stored here"):
        open_envelope(
            key=key_id(record_key(RUN, REPORTS)), subkey=A, value={"v": 2, "h": write.header, "s": write.signature},
            expiration_time=0.0, now=time.time(),
        )  # fmt: skip
    heartbeat = seal(
        KEYS["peerA"], key=record_key(RUN, "members"), subkey=A, payload={"v": 1}, expires_at=time.time() + 60
    )
    forged = Write(run_id=RUN, peer_id=A, header=heartbeat["h"], signature=heartbeat["s"])
    with pytest.raises(WriteRefused):
        open_write(forged, family=REPORTS, now=time.time())


def test_the_archive_queue_holds_one_entry_per_run(served: Served, tmp_path: Path) -> None:
    """Announcements wake the archive for their run; a flood of them cannot grow its queue."""
    archiver = Archiver(tmp_path / "archive", ("/ip4/127.0.0.1/tcp/9",), served.store, served.metrics)
    for _ in range(1000):
        archiver.submit(RUN)
        archiver.submit(pinned("churn"))
    assert archiver.queued == 2


def test_implausible_manifests_are_refused_when_announced(tmp_path: Path) -> None:
    """The issue's all-zero manifest (cheap to serve, huge to download) over the cap, and a manifest
    repeating a non-zero chunk, are refused before the record or the archive takes them."""
    served = Served(tmp_path / "c.db", limits=Limits(max_checkpoint_bytes=1 << 20))
    try:
        c = served.client
        c.report(report("peerA", range(1, 4)))
        zeros = {**checkpoint_files("zeros"), "model.safetensors": bytes(2 << 20)}
        files = checkpoint_files("repeats")
        repeats = {**files, "model.safetensors": files["model.safetensors"][:1024] * 4}
        for name, chosen in (("zeros over the cap", zeros), ("a repeated chunk", repeats)):
            manifest = build_manifest(chosen, run_id=RUN, round=3, global_step=6, chunk_size=1024)
            request = announcement(3, "peerA", manifest=manifest.to_bytes(), manifest_hash=manifest.hash,
                                   total_bytes=manifest.total_bytes)  # fmt: skip
            assert code_of(lambda r=request: c.announce(r)) == grpc.StatusCode.INVALID_ARGUMENT, name
        assert served.store.counts()["checkpoints"] == 0
    finally:
        served.close()
