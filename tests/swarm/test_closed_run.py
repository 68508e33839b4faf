"""A closed run with real processes: members hold credentials from the owner's key; an intruder that
ignores its own check is never admitted (its heartbeats are ignored, its joins refused) while the
members' rounds go on; an honest node without a credential stops at start with a clear message."""

from __future__ import annotations

import re
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.auth import issue, owner_public_key
from tests.swarm.conftest import Swarm, make_identity

pytestmark = pytest.mark.swarm

COMMON = ["--run-id", "closed", "--local-steps", "2", "--min-group", "2", "--join-grace", "20",
          "--eval-every", "1000", "--num-shards", "8"]  # fmt: skip


def test_only_credentialed_peers_take_part_in_a_closed_run(swarm: Swarm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import base58

    owner = Ed25519PrivateKey.generate()
    owner_key = owner_public_key(owner)
    files = {}
    for name in ("a", "b"):
        identity = tmp_path / f"{name}.key"
        peer = make_identity(identity)
        credential = issue(owner, run_id="closed", peer_id=base58.b58decode(peer), valid_s=3600)
        (tmp_path / f"{name}.cred").write_bytes(credential.to_bytes())
        files[name] = ["--identity", str(identity), "--credential", str(tmp_path / f"{name}.cred")]

    a = swarm.start("a", *COMMON, "--run-owner", owner_key, "--max-rounds", "4", *files["a"])
    entry = swarm.first_maddr(a)
    intruder = swarm.start("intruder", *COMMON, "--peer", entry, env={"SWARM_FAULT": "ignore_auth"})
    b = swarm.start("b", *COMMON, "--peer", entry, "--max-rounds", "4", *files["b"])
    # An honest node without a credential stops at once and says what to do.
    honest = swarm.start("honest", *COMMON, "--peer", entry)
    code = honest.wait_exit(180)
    log = honest.log.read_text()
    assert code != 0 and "is closed" in log and "swarm-node credential issue" in log, log[-2000:]
    assert a.wait_exit(300) == 0, a.log_tail()
    assert b.wait_exit(120) == 0, b.log_tail()

    summaries = [a.summary(), b.summary()]
    assert all(s["rounds_completed"] >= 4 for s in summaries)
    for s in summaries:
        assert {h["group_size"] for h in s["history"]} == {2}, "someone else entered a round"
    rounds = {h["round"]: h["digest"] for h in summaries[0]["history"]}
    assert all(rounds[h["round"]] == h["digest"] for h in summaries[1]["history"] if h["round"] in rounds)
    intruder_log = intruder.log.read_text()
    assert "test hook: taking part in closed run" in intruder_log
    assert not re.search(r"round \d+ committed", intruder_log), "the intruder committed a round"


def test_forged_checkpoint_pointers_are_refused_in_a_closed_run(swarm: Swarm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An outsider stores pointers to a checkpoint 'far ahead' in the run's DHT key, signed with its
    own key (so the signature verifies): one with no credential, one with a member's credential
    (bound to the member's peer id, not the outsider's). A credentialed joiner refuses both before
    dialling anyone and catches up from the members."""
    import asyncio

    import base58

    from swarm.dht.pointer import Pointer
    from swarm.dht.records import checkpoints_key
    from swarm.identity import load_identity
    from swarm.p2p import HostOptions, SwarmHost

    owner = Ed25519PrivateKey.generate()
    owner_key = owner_public_key(owner)
    files, credentials = {}, {}
    for name in ("a", "b", "c"):
        identity = tmp_path / f"{name}.key"
        peer = make_identity(identity)
        credentials[name] = issue(
            owner, run_id="closed", peer_id=base58.b58decode(peer), valid_s=3600
        ).to_bytes()
        (tmp_path / f"{name}.cred").write_bytes(credentials[name])
        files[name] = ["--identity", str(identity), "--credential", str(tmp_path / f"{name}.cred")]
    members = ["--run-owner", owner_key]
    a = swarm.start("a", *COMMON, *members, "--max-rounds", "100000", *files["a"])
    entry = swarm.first_maddr(a)
    b = swarm.start("b", *COMMON, "--peer", entry, *members, "--max-rounds", "100000", *files["b"])
    b.wait_for(lambda s: s.get("rounds_completed", 0) >= 1, timeout_s=180, what="a first round")

    run_id = (a.status() or {})["run_id"]  # "closed", pinned to a's key

    async def forge_then_watch_a_joiner() -> None:
        forger_key = tmp_path / "forger.key"
        make_identity(forger_key)
        key = load_identity(forger_key)
        assert key is not None
        host = await SwarmHost.start(
            HostOptions(
                initial_peers=(entry,), host_maddrs=("/ip4/127.0.0.1/tcp/0",), identity_path=str(forger_key)
            )
        )
        try:
            for n, credential in enumerate((b"", credentials["a"])):
                pointer = Pointer(
                    run_id=run_id,
                    round=1_000_000 + n,
                    global_step=10**9,
                    manifest_hash=f"{n:064x}",
                    total_bytes=10**9,
                    provider=host.peer_id,
                    expires_at=time.time() + 600,
                    addrs=("/ip4/127.0.0.1/tcp/9",),
                    credential=credential,
                ).signed_by(key)
                stored = await host.dht_store(
                    checkpoints_key(run_id),
                    pointer.to_wire(),
                    ttl_s=600,
                    subkey=f"{host.peer_name}/{pointer.round}",
                )
                assert stored
            c = swarm.start("c", *COMMON, "--peer", entry, *members, *files["c"])
            while (c.status() or {}).get("rounds_completed", 0) < 2:
                assert c.process.poll() is None, c.log_tail()
                await asyncio.sleep(0.5)
        finally:
            await host.shutdown()

    asyncio.run(asyncio.wait_for(forge_then_watch_a_joiner(), timeout=300))
    c = swarm.nodes[-1]
    log = c.log.read_text()
    refusals = re.findall(r"checkpoint pointer refused in closed run: (.*)", log)
    assert any("no credential" in r for r in refusals), log[-3000:]
    assert any("peer" in r for r in refusals if "no credential" not in r), refusals
    assert "checkpoint of round 100000" not in log, "the joiner followed a forged pointer"
    assert "forger" not in log and "could not dial provider" not in log
