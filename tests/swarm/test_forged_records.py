"""The attack that forked x' of a run, against real node processes: an outsider with a DHT of its
own (hivemind's, no validator) keeps writing, under each member's own subkey, a heartbeat that
says the member left (signed with the outsider's key, for ten minutes), and the unsigned form of
the previous protocol version. Before records were signed, each member then saw itself alone,
conducted alone (``--min-group 1``) and committed alone, and the digests differed from then on.
Now every node's DHT refuses the forgeries (and logs it), so the genuine heartbeats stay in the
DHT and the members keep rounding together, on one x'. (Were the forgeries kept, readers would drop
them as unsigned, and the members would still round together through the presence check of the
last round's partners, logging that the members key looks withheld: that fallback is not needed here.)
"""

from __future__ import annotations

import threading

import hivemind
import pytest
from hivemind.utils.timed_storage import get_dht_time

from swarm.dht.envelope import seal
from swarm.dht.records import MemberRecord, members_key
from swarm.identity import generate_identity, load_identity
from tests.swarm.conftest import Swarm

pytestmark = pytest.mark.swarm

ROUNDS = 10
FORGE_EVERY_S = 1.0
COMMON = ["--run-id", "forged", "--local-steps", "2", "--eval-every", "1000", "--num-shards", "4",
          "--until-round", str(ROUNDS)]  # fmt: skip


def _forge(outsider: hivemind.DHT, key, victims: list[str], stop: threading.Event) -> int:  # type: ignore[no-untyped-def]
    """Store the forgeries for every victim until ``stop``; how many stores the outsider made."""
    leaving = MemberRecord(round=0, global_step=0, local_steps_per_round=1.0, leaving=True).to_wire()
    stores = 0
    while not stop.is_set():
        expires = get_dht_time() + 600
        for victim in victims:
            signed = seal(key, key=members_key("forged"), subkey=victim, payload=leaving, expires_at=expires)
            for value in (signed, {"v": 1, **leaving}):
                outsider.store(members_key("forged"), value, expires, subkey=victim)
                stores += 1
        stop.wait(FORGE_EVERY_S)
    return stores


def test_members_keep_one_x_while_an_outsider_forges_their_leaving(swarm: Swarm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    generate_identity(tmp_path / "outsider.key")
    key = load_identity(tmp_path / "outsider.key")
    # a waits for b before its first round; b would round alone (--min-group 1) if it believed a left.
    a = swarm.start("a", *COMMON, "--min-group", "2")
    entry = swarm.first_maddr(a)
    b = swarm.start("b", *COMMON, "--min-group", "1", "--peer", entry)
    victims = [
        node.wait_for(lambda s: bool(s.get("peer_id")), timeout_s=120, what="its peer id")["peer_id"]
        for node in (a, b)
    ]
    outsider = hivemind.DHT(initial_peers=[entry], host_maddrs=["/ip4/127.0.0.1/tcp/0"], start=True)
    stop, made = threading.Event(), []
    forger = threading.Thread(target=lambda: made.append(_forge(outsider, key, victims, stop)), daemon=True)
    try:
        forger.start()
        assert a.wait_exit(300) == 0, a.log_tail()
        assert b.wait_exit(120) == 0, b.log_tail()
    finally:
        stop.set()
        forger.join(timeout=30)
        outsider.shutdown()
    assert made and made[0] > 0, "the outsider stored nothing"
    summaries = {node.name: node.summary() for node in (a, b)}
    digests = {h["round"]: h["digest"] for h in summaries["a"]["history"]}
    shared = [h for h in summaries["b"]["history"] if h["round"] in digests]
    assert len(shared) >= ROUNDS // 2, summaries  # b may have caught up on a round or two
    assert all(digests[h["round"]] == h["digest"] for h in shared), "x' forked"
    assert all(h["group_size"] == 2 for h in shared), "a member rounded alone"
    logs = a.log.read_text() + b.log.read_text()
    assert "refused" in logs and "DHT record" in logs, "no node logged the forgeries it refused"
    assert "withheld" not in logs, "a member's genuine heartbeat went missing from the DHT"
