"""Real node processes on loopback: training together, the round algebra, failures mid-round, joiners.

Each test starts ``swarm-node join`` processes with small deterministic settings (``--local-steps``
per round, ``--min-group``) so that rosters are predictable, and reads what the nodes wrote: status
files, summary JSON and, where the algebra is checked, per-round dumps (SWARM_DUMP_DIR).
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from node.errors import EXIT_TRY_AGAIN, EXIT_USAGE
from tests.swarm.conftest import Swarm, group_alive, make_identity

pytestmark = pytest.mark.swarm

DEAD_PEER = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWS49y3XXcCHCJXBqdqdeT2ouL38JSQTC9g78pT1EQFi8K"
COMMON = ["--join-grace", "20", "--eval-every", "1000", "--num-shards", "16"]
BASE_PERIOD_S = 5.0
"""The default --round-period, which rounds on --local-steps do not follow."""
CLOCKS_APART_S = 0.1
"""A round's end is timed (monotonic) a moment before its history entry (wall clock)."""


def _digests(summary: dict) -> dict[int, str]:
    return {entry["round"]: entry["digest"] for entry in summary["history"]}


def _load_dumps(folder: Path, round_id: int) -> dict[str, dict]:
    return {
        path.name.split("-round")[0]: torch.load(path, weights_only=False)
        for path in folder.glob(f"*-round{round_id}.pt")
    }


def test_two_nodes_train_together_agree_on_every_round_and_commit_the_mean(
    swarm: Swarm, tmp_path: Path
) -> None:
    """Two members with unequal work (2 vs 5 local steps), the second started with a dead --peer
    first: they agree on x' in every round, and each committed C[Delta] equals the float64 mean of
    their deltas, applied once on both."""
    dumps = tmp_path / "dumps"
    env = {"SWARM_DUMP_DIR": str(dumps)}
    args = ["--run-id", "pair", "--min-group", "2", "--max-rounds", "4", *COMMON]
    a = swarm.start("a", *args, "--local-steps", "2", env=env)
    # The first --peer is dead: any live one of several must do.
    b = swarm.start(
        "b", *args, "--local-steps", "5", "--peer", DEAD_PEER, "--peer", swarm.first_maddr(a), env=env
    )
    assert a.wait_exit(240) == 0, a.log_tail()
    assert b.wait_exit(240) == 0, b.log_tail()
    sa, sb = a.summary(), b.summary()
    shared = set(_digests(sa)) & set(_digests(sb))
    assert len(shared) >= 3, (sa["history"], sb["history"])
    for round_id in shared:
        assert _digests(sa)[round_id] == _digests(sb)[round_id], f"x' differs after round {round_id}"
    assert all(entry["group_size"] == 2 for entry in sa["history"] if entry["round"] in shared)
    for s in (sa, sb):
        assert s["bytes_sent"] > 0 and s["bytes_received"] > 0
        assert s["last_loss"] < 5.5
        assert {"run_id", "peer_id", "final_step", "rounds_completed", "digest", "eval_loss"} <= set(s)
        # On steps no period applies: the summary reports the time measured between the node's
        # last two rounds (attempts that failed in between only shorten it), not the base 5 s.
        assert 0 < s["round_period_s"] != BASE_PERIOD_S, s["round_period_s"]
        for before, entry in itertools.pairwise(s["history"]):
            gap_s = entry["time"] - before["time"]
            assert 0 < entry["round_period_s"] <= gap_s + CLOCKS_APART_S, s["history"]
    checked = 0
    for round_id in range(1, 10):
        records = _load_dumps(dumps, round_id)
        if len(records) != 2:
            continue
        first = next(iter(records.values()))
        assert len(first["members"]) == 2
        reference = sum(r["delta"].double() for r in records.values()) / 2
        assert not torch.equal(*[r["delta"] for r in records.values()])
        for record in records.values():
            assert not record["aborted"]
            for _shard, start, aggregate, own in record["updates"]:
                expected = reference[start : start + aggregate.numel()]
                torch.testing.assert_close(aggregate.double(), expected, rtol=0, atol=1e-6)
                assert own is not None
            # x' after = x' before + C[Delta], applied once, on every member alike.
            total = torch.zeros_like(record["before"])
            for _shard, start, aggregate, _own in record["updates"]:
                total[start : start + aggregate.numel()] = aggregate
            assert torch.equal(record["after"], record["before"] + total)
        afters = [r["after"] for r in records.values()]
        assert torch.equal(afters[0], afters[1])
        checked += 1
    assert checked >= 3, "too few rounds with both members"


def _owned_shards(run_id: str, num_shards: int, ids: dict[str, str], name: str) -> int:
    """How many shards ``name`` owns in a round of all ``ids`` (the nodes' own rendezvous hashing)."""
    from swarm.averaging.shards import assign_owners
    from swarm.peer_names import peer_from_name

    roster = {n: peer_from_name(peer) for n, peer in ids.items()}
    return sum(owner == roster[name] for owner in assign_owners(run_id, num_shards, list(roster.values())))


@pytest.mark.parametrize("scope", ["group", "process"])
def test_member_killed_mid_round_leaves_survivors_identical(swarm: Swarm, tmp_path: Path, scope: str) -> None:
    """The owner with the highest peer id (never the conductor) dies after 3 of its result sends."""
    keys = {f"n{i}": tmp_path / f"n{i}.key" for i in range(3)}
    # The victim sends 2 results (one per other member) per shard it owns: draw identities until it
    # owns at least 2 of the 16 (about 1 draw in 70 gives it fewer, and it would never reach the kill).
    for _ in range(100):
        for path in keys.values():
            path.unlink(missing_ok=True)
        ids = {name: make_identity(path) for name, path in keys.items()}
        victim = max(ids, key=lambda name: ids[name])
        if _owned_shards("kill", 16, ids, victim) >= 2:
            break
    dumps = tmp_path / "dumps"
    kill_round = 3
    # Everyone leaves right after the round with the failure: with the victim gone, a group of 3 cannot form again.
    args = [
        "--run-id",
        "kill",
        "--local-steps",
        "2",
        "--min-group",
        "3",
        "--max-rounds",
        str(kill_round),
        *COMMON,
    ]
    order = sorted(ids, key=lambda name: ids[name])  # the conductor (lowest id) first
    nodes = {}
    for name in order:
        env = {"SWARM_DUMP_DIR": str(dumps)}
        if name == victim:
            env["SWARM_FAULT"] = f"round:{kill_round},after_results:3,scope:{scope}"
        peer = [] if not nodes else ["--peer", swarm.first_maddr(nodes[order[0]])]
        nodes[name] = swarm.start(name, *args, *peer, env=env, identity=keys[name])
    dead = nodes[victim]
    assert dead.wait_exit(300) == -9, dead.log_tail()
    # Its helpers (DHT process, p2pd) die with it: at once for the group, by the watchdog otherwise.
    deadline = time.monotonic() + 30
    while group_alive(dead.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(dead.process.pid), "the killed node's helper processes outlived it"

    survivors = [nodes[name] for name in order if name != victim]
    for node in survivors:
        assert node.wait_exit(300) == 0, node.log_tail()
    summaries = [node.summary() for node in survivors]
    records = _load_dumps(dumps, kill_round)
    survivor_records = [records[s["peer_id"]] for s in summaries if s["peer_id"] in records]
    assert len(survivor_records) == 2, f"survivors did not both commit round {kill_round}"
    first, second = survivor_records
    assert first["members"] == second["members"] and len(first["members"]) == 3
    assert first["aborted"] == second["aborted"]
    assert first["aborted"], "the victim's shards should have been aborted"
    assert len(first["updates"]) > 0, "the other owners' shards should have committed"
    assert torch.equal(first["after"], second["after"])
    for record in survivor_records:  # nothing applied twice: after = before + each committed shard once
        total = torch.zeros_like(record["before"])
        for _shard, start, aggregate, _own in record["updates"]:
            total[start : start + aggregate.numel()] = aggregate
        assert torch.equal(record["after"], record["before"] + total)
    assert _digests(summaries[0])[kill_round] == _digests(summaries[1])[kill_round]
    for round_id in set(_digests(summaries[0])) & set(_digests(summaries[1])):
        assert _digests(summaries[0])[round_id] == _digests(summaries[1])[round_id]


def test_a_member_that_repairs_a_round_it_took_part_in_counts_its_samples_once(swarm: Swarm) -> None:
    """x drops one owner's results in round 2 (SWARM_FAULT=lose_results:2): the others commit the
    round with x's parts, x takes the round from a peer's journal. Every sample trained is then in
    the run's count exactly once: the last round's swarm_samples equals what the three trained minus
    what they still hold unsent (x used to count its round-2 samples again in round 3)."""
    args = ["--run-id", "count", "--local-steps", "2", "--min-group", "3", "--until-round", "5", *COMMON]
    a = swarm.start("a", *args)
    maddr = swarm.first_maddr(a)
    b = swarm.start("b", *args, "--peer", maddr)
    x = swarm.start("x", *args, "--peer", maddr, env={"SWARM_FAULT": "lose_results:2"})
    for node in (a, b, x):
        assert node.wait_exit(300) == 0, node.log_tail()
    summaries = [node.summary() for node in (a, b, x)]
    assert [s["round"] for s in summaries] == [5, 5, 5]
    assert len({s["digest"] for s in summaries}) == 1
    assert summaries[2]["rounds_by_status"]["repair"] == 1, summaries[2]["rounds_by_status"]
    assert "the commit names shards" in x.log.read_text()
    last = summaries[0]["history"][-1]
    assert last["round"] == 5
    trained = sum(s["samples"] - s["unsent_samples"] for s in summaries)
    assert last["swarm_samples"] == trained, [(s["samples"], s["unsent_samples"]) for s in summaries]


def test_a_diverged_member_is_repaired_from_the_majority(swarm: Swarm, tmp_path: Path) -> None:
    """The higher-id member perturbs its x' after round 2: the next rendezvous excludes it, it repairs."""
    keys = {f"n{i}": tmp_path / f"n{i}.key" for i in range(2)}
    ids = {name: make_identity(path) for name, path in keys.items()}
    conductor, diverging = sorted(ids, key=lambda name: ids[name])
    args = ["--run-id", "repair", "--local-steps", "2", "--min-group", "2", *COMMON]
    first = swarm.start(conductor, *args, "--max-rounds", "6", identity=keys[conductor])
    second = swarm.start(
        diverging,
        *args,
        "--peer",
        swarm.first_maddr(first),
        identity=keys[diverging],
        env={"SWARM_FAULT": "diverge:2"},
    )
    assert first.wait_exit(300) == 0, first.log_tail()
    second.process.send_signal(signal.SIGTERM)
    assert second.wait_exit(120) == 0, second.log_tail()
    s1, s2 = first.summary(), second.summary()
    assert s2["repairs"] >= 1 and s2["rounds_by_status"]["repair"] >= 1
    assert s1["repairs"] == 0
    later = sorted(r for r in set(_digests(s1)) & set(_digests(s2)) if r > 3)
    assert later, (s1["history"], s2["history"])
    for round_id in later:
        assert _digests(s1)[round_id] == _digests(s2)[round_id]


def test_late_joiner_catches_up_and_agrees(swarm: Swarm) -> None:
    """A and B train on; C joins after round 3, takes x' from them, trains 3 rounds; then A and B stop on SIGTERM."""
    a = swarm.start("a", "--run-id", "late", "--local-steps", "2", "--min-group", "2", *COMMON)
    maddr = swarm.first_maddr(a)
    b = swarm.start(
        "b", "--run-id", "late", "--peer", maddr, "--local-steps", "2", "--min-group", "2", *COMMON
    )
    a.wait_for(lambda s: s["round"] >= 3, timeout_s=240, what="round 3")
    c = swarm.start(
        "c", "--run-id", "late", "--peer", maddr, "--local-steps", "2", "--max-rounds", "3", *COMMON
    )
    assert c.wait_exit(300) == 0, c.log_tail()
    for node in (a, b):  # a graceful stop: finish the step, announce leaving, write the summary, exit 0
        node.process.send_signal(signal.SIGTERM)
    for node in (a, b):
        assert node.wait_exit(120) == 0, node.log_tail()
    sa, sb, sc = a.summary(), b.summary(), c.summary()
    shared = set(_digests(sa)) & set(_digests(sc))
    assert len(shared) >= 2 and min(_digests(sc)) > 3, "the joiner should start from the swarm's round, not 0"
    for round_id in shared:
        assert _digests(sa)[round_id] == _digests(sc)[round_id] == _digests(sb)[round_id]


def test_unreachable_peer_gives_one_line_error_and_a_status_to_try_again() -> None:
    """No peer answering may pass (the peer starts later): not the usage error's status 2."""
    fake = DEAD_PEER
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "join",
            "--ephemeral",
            "--peer",
            fake,
            "--host-maddr",
            "/ip4/127.0.0.1/tcp/0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_TRY_AGAIN != EXIT_USAGE
    errors = [line for line in result.stderr.splitlines() if line.startswith("swarm-node: error")]
    assert len(errors) == 1
    assert fake in errors[0] and re.search(r"no bootstrap peer answered", errors[0])
    assert "firewall" in errors[0] and "run id" in errors[0] and "may pass" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_three_nodes_with_the_cocktail_codec_hold_identical_x_and_lose_no_unsent_work(
    swarm: Swarm, tmp_path: Path
) -> None:
    """Cocktail rounds after one exact warm-up round, with overlap: bit-identical x' on every member,
    C[delta_i] is exactly the codec's output, and x_i - x' keeps everything that was not sent."""
    from swarm.compression.cocktail import CocktailCodec
    from swarm.compression.codecs import CodecContext

    dumps = tmp_path / "dumps"
    env = {"SWARM_DUMP_DIR": str(dumps)}
    settings = ["--local-steps", "2", "--min-group", "3", "--max-rounds", "4", *COMMON]
    a = swarm.start(
        "a", "--run-id", "cocktail", "--codec", "cocktail", "--warmup-rounds", "1", *settings, env=env
    )
    peer = swarm.first_maddr(a)
    others = [swarm.start(n, "--run-id", "cocktail", "--peer", peer, *settings, env=env) for n in "bc"]
    for node in (a, *others):
        assert node.wait_exit(300) == 0, node.log_tail()
    summaries = [n.summary() for n in (a, *others)]
    shared = set.intersection(*(set(_digests(s)) for s in summaries))
    assert len(shared) >= 3
    for round_id in shared:
        assert len({_digests(s)[round_id] for s in summaries}) == 1, f"x' differs after round {round_id}"
    for entry in summaries[0]["history"]:
        if entry["round"] == 1:
            assert entry["codec"] == "fp32"
        elif entry["group_size"] == 3:
            assert entry["codec"] == "cocktail" and entry["compression_ratio"] > 100, entry
    codec = CocktailCodec()
    checked = 0
    for round_id in sorted(shared - {1}):
        records = _load_dumps(dumps, round_id)
        assert len(records) == 3
        for record in records.values():
            expected_residual = record["residual_before"].clone()
            for shard, start, aggregate, own in record["updates"]:
                end = start + aggregate.numel()
                ctx = CodecContext(round=round_id, shard=shard)
                part = record["delta"][start:end].clone()
                for fold_start, moved in record["folds"]:
                    if fold_start == start:
                        part += moved
                assert torch.equal(own, codec.decode(codec.encode(part, ctx), end - start, ctx))
                expected_residual[start:end] -= own
            torch.testing.assert_close(record["residual_after"], expected_residual, rtol=0, atol=1e-6)
            assert torch.count_nonzero(record["residual_after"]) > 0.9 * record["residual_after"].numel()
        checked += 1
    assert checked >= 2
