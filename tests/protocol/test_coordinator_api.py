"""Every RPC of the coordinator against the real gRPC server on loopback, good requests and bad.

The server runs in this process (the same classes ``swarm-coordinator serve`` wires up) over a
real SQLite file; requests go through a real channel.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coordinator.service import SERVICE_NAME
from node.reporting import Reporter
from swarm.checkpoint.manifest import build_manifest
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as pb
from tests.protocol.coordinator_support import (
    KEYS,
    PEERS,
    RUN,
    Served,
    checkpoint_files,
    report,
    round_report,
)

A, B = PEERS["peerA"], PEERS["peerB"]


def announcement(round: int, provider_id: str, /, **override) -> pb.AnnounceCheckpointRequest:
    """``provider_id``: a nickname of ``PEERS`` (or any peer id)."""
    provider_id = PEERS.get(provider_id, provider_id)
    files = checkpoint_files(f"round {round}", 256 * (round + 1))
    manifest = build_manifest(files, run_id=RUN, round=round, global_step=round * 2, chunk_size=1024)
    fields = dict(
        run_id=RUN, round=round, global_step=round * 2, manifest_hash=manifest.hash,
        total_bytes=manifest.total_bytes, provider=provider_id, addrs=["/ip4/10.0.0.1/tcp/4001"],
        manifest=manifest.to_bytes(),
    )  # fmt: skip
    fields.update(override)
    return pb.AnnounceCheckpointRequest(**fields)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_reports_make_the_run_its_peers_and_their_credit(served: Served) -> None:
    c = served.client
    assert c.report(report("peerA", range(1, 6))).recorded == 5
    assert c.report(report("peerB", range(3, 6), loss=3.5)).recorded == 3
    # A resent batch (the node never saw the answer) is counted once.
    assert c.report(report("peerA", range(4, 8))).recorded == 2

    info = c.run_info(RUN)
    # The run's round is the one its online members attest: the lower median of their newest (7, 5).
    assert (info.round, info.global_step, info.members_online, info.peers_seen) == (5, 10, 2, 2)
    assert info.samples == (7 + 3) * 16 and info.sent_bytes == 10 * 1000
    assert info.loss == pytest.approx(3.0)  # both reported round 5: 2.5 and 3.5
    assert info.samples_per_s == pytest.approx(16.0)
    assert info.compression_ratio == pytest.approx(150.0)
    assert not info.HasField("latest_checkpoint")

    peers = {p.peer_id: p for p in c.peers(RUN)}
    assert (peers[A].rounds, peers[A].samples, peers[A].last_round) == (7, 112, 7)
    assert (peers[B].rounds, peers[B].samples) == (3, 48)
    assert peers[A].metrics_url == "127.0.0.1:9101" and list(peers[A].addrs)
    assert len(c.peers(RUN, seen_within_s=3600)) == 2


def test_checkpoints_are_announced_listed_and_fetched(served: Served) -> None:
    c = served.client
    c.report(report("peerA", range(1, 21)))
    c.report(report("peerB", range(1, 21)))
    first = announcement(10, "peerA")
    assert c.announce(first).new_checkpoint
    assert c.announce(announcement(20, "peerA")).new_checkpoint
    # A second member serves the same manifest: one checkpoint, two providers.
    assert not c.announce(announcement(20, "peerB")).new_checkpoint

    listed = c.checkpoints(RUN)
    assert [x.round for x in listed] == [20, 10]
    assert sorted(p.peer_id for p in listed[0].providers) == sorted([A, B])
    latest = c.checkpoint(RUN)
    assert latest.checkpoint.round == 20 and latest.checkpoint.global_step == 40
    by_round = c.checkpoint(RUN, round=10)
    assert by_round.checkpoint.manifest_hash == first.manifest_hash and by_round.manifest == first.manifest
    by_hash = c.checkpoint(RUN, manifest_hash=first.manifest_hash)
    assert by_hash.checkpoint.round == 10
    assert c.run_info(RUN).latest_checkpoint.round == 20
    assert len(c.checkpoints(RUN, limit=1)) == 1


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("ListCheckpoints", pb.ListCheckpointsRequest(run_id="nobody")),
        ("GetCheckpoint", pb.GetCheckpointRequest(run_id="nobody", latest=True)),
        ("ListPeers", pb.ListPeersRequest(run_id="nobody")),
        ("GetRunInfo", pb.GetRunInfoRequest(run_id="nobody")),
    ],
)
def test_an_unknown_run_is_not_found(served: Served, method: str, request_message) -> None:
    stub = getattr(served.client._stub, method)
    assert code_of(lambda: stub(request_message, timeout=10)) == grpc.StatusCode.NOT_FOUND


def test_a_missing_checkpoint_is_not_found(served: Served) -> None:
    c = served.client
    c.report(report("peerA", range(1, 6)))
    assert code_of(lambda: c.checkpoint(RUN)) == grpc.StatusCode.NOT_FOUND
    c.announce(announcement(5, "peerA"))
    assert code_of(lambda: c.checkpoint(RUN, round=6)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: c.checkpoint(RUN, manifest_hash="0" * 64)) == grpc.StatusCode.NOT_FOUND


BAD_REPORTS = {
    "empty run id": dict(run_id=""),
    "run id of 200 characters": dict(run_id="r" * 200),
    "peer id with a slash": dict(peer_id="a/b"),
    "device of 100 characters": dict(device="x" * 100),
    "metrics url that is not host:port": dict(metrics_url="http://x/metrics"),
    "nine addresses": dict(addrs=["/ip4/1.2.3.4/tcp/1"] * 9),
    "an address that is not a multiaddr": dict(addrs=["1.2.3.4:5"]),
    "no report": dict(reports=[]),
    "257 reports": dict(reports=[round_report(r) for r in range(257)]),
    "infinite loss": dict(reports=[round_report(1, loss=math.inf)]),
    "unknown status": dict(reports=[pb.RoundReport(round=1, status="great", time=time.time())]),
    "time an hour ahead": dict(reports=[round_report(1, t=time.time() + 3600)]),
    "NaN throughput": dict(reports=[pb.RoundReport(round=1, samples_per_s=math.nan, status="committed")]),
    # Two of these in one minute made the retention pass overflow SQLite's integers, every restart.
    "samples of 2^63 - 1": dict(reports=[round_report(1, samples=2**63 - 1)]),
    "round of 2^64 - 1": dict(
        reports=[pb.RoundReport(round=2**64 - 1, status="committed", time=time.time())]
    ),
    "throughput of 1e300": dict(reports=[pb.RoundReport(round=1, samples_per_s=1e300, status="committed")]),
}


@pytest.mark.parametrize("case", list(BAD_REPORTS))
def test_bad_reports_are_invalid_arguments(served: Served, case: str) -> None:
    request = report("peerA", range(1, 2))
    for name, value in BAD_REPORTS[case].items():
        if isinstance(value, list):
            del getattr(request, name)[:]
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    # Signed as peerA signs (a run id no one can sign for is set on the write afterwards).
    served.client.key = KEYS["peerA"]
    signed = served.client.signed(RUN, "reports", request.SerializeToString())
    signed.run_id = request.run_id
    call = served.client._stub.ReportMetrics
    assert code_of(lambda: call(signed, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert served.store.counts()["reports"] == 0, "a refused request must record nothing"


def test_bad_announcements_are_invalid_arguments(served: Served) -> None:
    c = served.client
    c.report(report("peerA", range(1, 4)))
    good = announcement(3, "peerA")
    invalid, unserved = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = {
        "hash of other bytes": (dict(manifest_hash="ab" * 32), invalid),
        "hash that is not hex": (dict(manifest_hash="xyz"), invalid),
        "round that is not the manifest's": (dict(round=4), invalid),
        "size that is not the manifest's": (dict(total_bytes=1), invalid),
        "run that is not the manifest's": (dict(run_id="other-run"), unserved),
        "manifest that is not JSON": (dict(manifest=b"\xff" * 10), invalid),
        "manifest over 1 MiB": (dict(manifest=b" " * (1024 * 1024 + 1)), invalid),
        "provider id of 200 characters": (dict(provider="p" * 200), invalid),
    }
    for case, (override, code) in cases.items():
        request = announcement(3, "peerA", **override)
        assert code_of(lambda r=request: c.announce(r)) == code, case
    assert c.announce(good).new_checkpoint
    assert served.store.counts()["checkpoints"] == 1


def test_bytes_that_are_not_the_request_message_are_invalid_arguments(served: Served) -> None:
    channel = grpc.insecure_channel(served.address)
    try:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/ReportMetrics")
        # Field 1 (run_id, a string) sent as a varint, then a truncated length-delimited field.
        for payload in (b"\x08\x96\x01", b"\x0a\xff\xff\xff\x0f", b"\x12\x02\xff\xfe"):
            assert code_of(lambda p=payload: raw(p, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
    # The server is still serving.
    assert served.client.report(report("peerA", range(1, 2))).recorded == 1


def test_an_oversized_request_is_refused_by_size(served: Served) -> None:
    # The client refuses to sign a write over the bound; a client that sends one anyway is refused
    # by its size, before anything is parsed.
    with pytest.raises(ValueError, match="over its bound"):
        served.client.announce(announcement(1, "peerA", manifest=b"x" * (5 * 1024 * 1024)))
    huge = pb.SignedWrite(run_id=RUN, peer_id=A, header=b"x" * (5 * 1024 * 1024), signature=b"")
    call = served.client._stub.AnnounceCheckpoint
    assert code_of(lambda: call(huge, timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_and_reflection(served: Served) -> None:
    channel = grpc.insecure_channel(served.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert SERVICE_NAME in names and "grpc.health.v1.Health" in names
    finally:
        channel.close()


def test_metrics_and_service_discovery_over_http(served: Served) -> None:
    c = served.client
    c.report(report("peerA", range(1, 4), metrics_url="10.1.2.3:9101"))
    c.report(report("peerB", range(1, 4), metrics_url="10.1.2.4:9102"))
    c.announce(announcement(2, "peerA"))
    text = served.get("/metrics").decode()
    assert f'swarm_run_members_online{{run="{RUN}"}} 2.0' in text
    assert f'swarm_run_round{{run="{RUN}"}} 3.0' in text
    assert f'swarm_run_latest_checkpoint_round{{run="{RUN}"}} 2.0' in text
    assert f'swarm_run_samples_total{{run="{RUN}"}} 96.0' in text
    assert "swarm_coordinator_reports_total 6.0" in text
    assert 'swarm_coordinator_rpc_seconds_count{code="OK",method="ReportMetrics"} 2.0' in text
    # Prometheus is sent where each report came from (loopback here), to the port its peer signed.
    sd = json.loads(served.get("/sd"))
    assert sd == [{"targets": ["127.0.0.1:9101", "127.0.0.1:9102"], "labels": {"run": RUN}}]
    run = json.loads(served.get(f"/api/run?run={RUN}"))
    assert run["members_online"] == 2 and run["latest_checkpoint"]["round"] == 2
    series = json.loads(served.get(f"/api/series?run={RUN}"))
    assert [p["round"] for p in series] == [1, 2, 3] and all(p["members"] == 2 for p in series)
    with pytest.raises(urllib.error.HTTPError) as info:
        served.get("/api/run?run=nobody")
    assert info.value.code == 404


def test_a_node_that_says_it_left_is_no_longer_online_nor_discovered(served: Served) -> None:
    """Before, a node that left counted as online (the dashboard's "members online", /sd) for the
    whole online window, a minute after it was gone."""
    c = served.client
    c.report(report("peerA", range(1, 4), metrics_url="10.1.2.3:9101"))
    c.report(report("peerB", range(1, 4), metrics_url="10.1.2.4:9102"))
    leaving = pb.ReportMetricsRequest(run_id=RUN, peer_id=A, device="cpu", leaving=True)
    assert c.report(leaving).recorded == 0
    assert c.run_info(RUN).members_online == 1
    assert json.loads(served.get("/sd")) == [{"targets": ["127.0.0.1:9102"], "labels": {"run": RUN}}]
    # Its credit stays; it is still a peer seen.
    assert {p.peer_id for p in c.peers(RUN)} == {A, B}
    # Its last reports may come with the notice; a node that reports again is back online.
    last = report("peerB", range(4, 5), metrics_url="10.1.2.4:9102")
    last.leaving = True
    assert c.report(last).recorded == 1
    assert json.loads(served.get(f"/api/run?run={RUN}"))["members_online"] == 0
    assert json.loads(served.get("/sd")) == []
    c.report(report("peerA", range(5, 6), metrics_url="10.1.2.3:9101"))
    assert c.run_info(RUN).members_online == 1
    # A call with no reports that is not a leaving notice is still refused.
    empty = pb.ReportMetricsRequest(run_id=RUN, peer_id=A, device="cpu")
    assert code_of(lambda: c.report(empty)) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stopping_reporter_says_that_its_node_leaves(served: Served) -> None:
    """The node's reporter, stopped as the node leaves, delivers its reports and then the notice."""
    reporter = Reporter(
        served.address, key=KEYS["peerA"], run_id=RUN, peer_id=A, device="cpu", metrics_url="10.1.2.3:9101"
    )
    reporter.start()
    reporter.submit(round_report(1))
    reporter.stop()
    info = served.client.run_info(RUN)
    assert (info.round, info.members_online, info.peers_seen) == (1, 0, 1)
    assert json.loads(served.get("/sd")) == []


def test_rounds_without_a_compression_figure_serve_none(served: Served) -> None:
    """A member alone in its round moves nothing and reports compression 0: such rounds have no
    compression (null, which the chart skips), and do not pull a round's figure towards 0."""
    c = served.client
    alone = report("peerA", range(1, 3))
    for r in alone.reports:
        r.compression_ratio, r.group_size = 0.0, 1
    c.report(alone)
    series = json.loads(served.get(f"/api/series?run={RUN}"))
    assert [p["compression_ratio"] for p in series] == [None, None]
    assert json.loads(served.get(f"/api/run?run={RUN}"))["compression_ratio"] is None
    c.report(report("peerA", range(3, 4)))
    mixed = report("peerB", range(3, 4))
    mixed.reports[0].compression_ratio = 0.0
    c.report(mixed)
    series = json.loads(served.get(f"/api/series?run={RUN}"))
    assert series[-1]["compression_ratio"] == pytest.approx(150.0)
    assert c.run_info(RUN).compression_ratio == pytest.approx(150.0)


def test_an_announcement_ahead_of_the_members_is_retried_until_they_catch_up(served: Served) -> None:
    """A member announces its checkpoint of round 10 while the other member has reported round 5:
    the coordinator refuses it for now (FAILED_PRECONDITION), the reporter keeps it and tries again,
    and it is recorded once the other member reports round 10."""
    served.client.report(report("peerB", range(1, 6)))
    reporter = Reporter(served.address, key=KEYS["peerA"], run_id=RUN, peer_id=A, device="cpu")
    reporter.start()
    try:
        for r in range(1, 11):
            reporter.submit(round_report(r))
        reporter.announce(announcement(10, "peerA"))
        deadline = time.monotonic() + 30
        while not served.metrics.registry.get_sample_value(
            "swarm_coordinator_rejected_total", {"reason": "ahead"}
        ):
            assert time.monotonic() < deadline, "the announcement was never tried"
            time.sleep(0.05)
        assert served.store.counts()["checkpoints"] == 0 and reporter.pending == 1
        served.client.report(report("peerB", range(6, 11)))
        while served.store.counts()["checkpoints"] == 0:
            assert time.monotonic() < deadline, "the announcement was not retried"
            time.sleep(0.05)
        assert reporter.refused == 0
    finally:
        reporter.stop()
