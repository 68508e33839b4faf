"""An outsider rewrites every record of an open run it can reach, against real node processes.

The outsider runs a DHT of its own (hivemind's, with no validator) and its own Ed25519 key, and
keeps writing, every second:

- under each member's own subkey, a heartbeat that says the member left (signed with its key, for
  ten minutes), and the unsigned form of the previous protocol version. Before records were
  signed, each member then saw itself alone, conducted alone (``--min-group 1``) and committed
  alone, and the digests differed from then on;
- a run spec of its own (another shard count, a week's life) and a coordinator address of its own,
  under the run's keys. Before the run id pinned its creator, the longer-lived spec replaced the
  honest one and every joiner was refused at every roster;
- its own heartbeat, claiming round 10^9, and a checkpoint pointer of round 10^9 signed by its own
  key (both valid envelopes: in an open run anyone may be a member), and a copy of that pointer
  under a member's pointer subkey. Before pointers were attested, ``swarm-node pull`` and joiners
  followed it to a download of garbage.

Now every node's DHT refuses what names another writer (and logs it), the creator's spec and
coordinator address are the only ones that open, and readers follow only the checkpoints the
members attest: the members keep rounding on one x', a joiner adopts the genuine spec, takes the
members' checkpoint and reports to the creator's coordinator, and a pull gets the members' x'.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import hivemind
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hivemind.utils.timed_storage import get_dht_time

from swarm.dht.envelope import seal
from swarm.dht.pointer import Pointer
from swarm.dht.records import (
    CoordinatorRecord,
    MemberRecord,
    RunSpec,
    checkpoints_key,
    config_key,
    coordinator_key,
    members_key,
)
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name
from swarm.run_settings import RunSettings
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.swarm

ROUNDS = 14
FORGE_EVERY_S = 1.0
FAR_ROUND = 10**9
FORGED_COORDINATOR = "203.0.113.9:50051"
COMMON = ["--run-id", "forged", "--local-steps", "2", "--eval-every", "1000", "--num-shards", "4",
          "--checkpoint-every", "2", "--until-round", str(ROUNDS)]  # fmt: skip


@dataclass
class Outsider:
    dht: hivemind.DHT
    key: Ed25519PrivateKey
    run_id: str
    victims: list[str]

    @property
    def peer(self) -> bytes:
        return peer_id_of(public_key_protobuf(self.key.public_key()))

    def forge_once(self) -> int:
        """Store every forgery once; how many stores the outsider made."""
        now, stores = get_dht_time(), 0

        def store(key: str, value: object, expires: float, subkey: str | None = None) -> None:
            nonlocal stores
            self.dht.store(key, value, expires, subkey=subkey)
            stores += 1

        leaving = MemberRecord(round=0, global_step=0, local_steps_per_round=1.0, leaving=True).to_wire()
        members = members_key(self.run_id)
        for victim in self.victims:
            store(members, seal(self.key, key=members, subkey=victim, payload=leaving, expires_at=now + 600),
                  now + 600, victim)  # fmt: skip
            store(members, {"v": 1, **leaving}, now + 600, victim)
        me = peer_name(self.peer)
        far = MemberRecord(round=FAR_ROUND, global_step=FAR_ROUND, local_steps_per_round=1.0).to_wire()
        store(
            members, seal(self.key, key=members, subkey=me, payload=far, expires_at=now + 300), now + 300, me
        )
        spec = RunSpec(**asdict(RunSettings(num_shards=16)), model_hash="0" * 64, initial_digest="",
                       data_hash="0" * 64, software="swarm-averaging/2").to_wire()  # fmt: skip
        week = now + 6 * 24 * 3600
        for key, payload in ((config_key(self.run_id), spec),
                             (coordinator_key(self.run_id), CoordinatorRecord(address=FORGED_COORDINATOR).to_wire())):  # fmt: skip
            store(key, seal(self.key, key=key, subkey=None, payload=payload, expires_at=week), week)
        pointer = Pointer(
            run_id=self.run_id, round=FAR_ROUND, global_step=FAR_ROUND, manifest_hash="f" * 64,
            total_bytes=10**9, provider=self.peer, expires_at=now + 600, addrs=("/ip4/127.0.0.1/tcp/9",),
        ).signed_by(self.key)  # fmt: skip
        checkpoints = checkpoints_key(self.run_id)
        for subkey in (f"{me}/{FAR_ROUND}", f"{self.victims[0]}/{FAR_ROUND}"):
            sealed = seal(
                None, key=checkpoints, subkey=subkey, payload=pointer.to_wire(), expires_at=now + 600
            )
            store(checkpoints, sealed, now + 600, subkey)
        return stores

    def forge_until(self, stop: threading.Event) -> int:
        stores = 0
        while not stop.is_set():
            stores += self.forge_once()
            stop.wait(FORGE_EVERY_S)
        return stores


def test_members_joiners_and_pulls_hold_while_an_outsider_rewrites_every_record(
    swarm: Swarm, tmp_path: Path
) -> None:
    generate_identity(tmp_path / "outsider.key")
    key = load_identity(tmp_path / "outsider.key")
    assert key is not None
    # a waits for b before its first round; b would round alone (--min-group 1) if it believed a left.
    # a (the run's creator) names a coordinator that is not running: joiners must name the same one.
    a = swarm.start("a", *COMMON, "--min-group", "2", "--coordinator", "127.0.0.1:9")
    entry = swarm.first_maddr(a)
    b = swarm.start("b", *COMMON, "--min-group", "1", "--peer", entry)
    victims = [
        node.wait_for(lambda s: bool(s.get("peer_id")), timeout_s=120, what="its peer id")["peer_id"]
        for node in (a, b)
    ]
    run_id = (a.status() or {})["run_id"]
    assert run_id.startswith("forged.") and (b.status() or {}).get("run_id") == run_id
    outsider = Outsider(
        hivemind.DHT(initial_peers=[entry], host_maddrs=["/ip4/127.0.0.1/tcp/0"], start=True),
        key, run_id, victims,
    )  # fmt: skip
    stop, made = threading.Event(), []
    forger = threading.Thread(target=lambda: made.append(outsider.forge_until(stop)), daemon=True)
    try:
        forger.start()
        a.wait_for(lambda s: any(c["round"] >= 4 for c in s.get("checkpoints", [])), timeout_s=240,
                   what="a checkpoint of round 4+")  # fmt: skip
        c = swarm.start("c", *COMMON, "--peer", entry)
        c.wait_for(lambda s: s.get("rounds_completed", 0) >= 1, timeout_s=240, what="c's first round")
        out = tmp_path / "pulled"
        pulled = subprocess.run([sys.executable, "-m", "node", "pull", "--peer", entry, "--out", str(out)],
                                capture_output=True, text=True, timeout=240)  # fmt: skip
        assert a.wait_exit(300) == 0, a.log_tail()
        assert b.wait_exit(120) == 0, b.log_tail()
        assert c.wait_exit(240) == 0, c.log_tail()
    finally:
        stop.set()
        forger.join(timeout=30)
        outsider.dht.shutdown()
    assert made and made[0] > 0, "the outsider stored nothing"
    summaries = {node.name: node.summary() for node in (a, b, c)}
    digests = {h["round"]: h["digest"] for h in summaries["a"]["history"]}
    for name in ("b", "c"):
        shared = [h for h in summaries[name]["history"] if h["round"] in digests]
        assert len(shared) >= 3, summaries[name]["history"]
        assert all(digests[h["round"]] == h["digest"] for h in shared), f"{name}'s x' forked from a's"
    assert all(h["group_size"] >= 2 for h in summaries["a"]["history"]), "a member rounded alone"
    # The joiner adopted the genuine spec (16 shards would have kept it out of every roster) and
    # started from the members' checkpoint, not the outsider's round 10^9.
    catch_up = summaries["c"]["catch_up"]
    assert catch_up.get("checkpoint_round", 0) < FAR_ROUND and catch_up.get("round", 0) < FAR_ROUND, catch_up
    # The pull took the members' x' of a round a member journaled.
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    info = json.loads((out / "swarm.json").read_text())
    assert info["run_id"] == run_id and digests.get(info["round"]) is not None, info
    logs = {node.name: node.log.read_text() for node in (a, b, c)}
    assert "refused" in logs["a"] + logs["b"] and "DHT record" in logs["a"] + logs["b"], (
        "no node logged the forgeries it refused"
    )
    assert "withheld" not in logs["a"] + logs["b"], "a member's genuine heartbeat went missing from the DHT"
    assert "names coordinator 127.0.0.1:9" in logs["c"] and FORGED_COORDINATOR not in logs["c"], logs["c"][
        -3000:
    ]
    assert str(FAR_ROUND) not in logs["c"], "the joiner considered the outsider's checkpoint"
