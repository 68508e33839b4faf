"""The config tree: sources and their precedence, validation, and the example config that ships."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from node.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads() -> None:
    config = load_config(file=str(ROOT / "deploy" / "node.example.toml"), cli={}, environ={})
    assert config.output.metrics_port == 9100
    assert config.network.host_maddrs[0] == "/ip4/0.0.0.0/tcp/31337"
    assert config.run.explicit() == {}


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[run]\nrun_id = "from-file"\nlr = 0.01\n[training]\nmax_rounds = 3\n')
    config = load_config(file=str(path), cli={}, environ={"SWARM_RUN_ID": "from-env"})
    assert (config.run.run_id, config.run.given["lr"], config.training.max_rounds) == ("from-env", 0.01, 3)
    config = load_config(file=str(path), cli={"run-id": "from-flag"}, environ={"SWARM_RUN_ID": "from-env"})
    assert config.run.run_id == "from-flag"
    config = load_config(
        file=None, cli={}, environ={"SWARM_PEER": "/ip4/1.2.3.4/tcp/1/p2p/Qm1,/ip4/1.2.3.5/tcp/1/p2p/Qm2"}
    )
    assert len(config.network.peers) == 2


@pytest.mark.parametrize(
    ("cli", "environ", "message"),
    [
        ({"codec": "zip"}, {}, "codec"),
        ({"lr": 5.0}, {}, "lr"),
        ({"device": "tpu"}, {}, "device"),
        ({"peer": ["/ip4/1.2.3.4/tcp/1"]}, {}, "/p2p/"),
        ({"peer": ["1.2.3.4:31337"]}, {}, "multiaddr"),
        ({}, {"SWARM_MAX_ROUNDS": "many"}, "--max-rounds"),
        ({"run-id": "bad id"}, {}, "run id"),
        ({"round-period": 0.0}, {}, "--round-period must be above 0"),
        ({"join-grace": 0.0}, {}, "--join-grace"),
        ({"min-group": 0}, {}, "--min-group must be at least 1"),
        ({"codec": "cocktail", "sparsity": 0.0}, {}, "sparsity"),
        ({"codec": "cocktail", "sparsity": 1.5}, {}, "sparsity"),
        ({"codec": "cocktail", "topk": -0.2}, {}, "topk"),
        ({"codec": "cocktail", "bits": 3}, {}, "bits"),
        ({"codec": "fp32", "bits": 8}, {}, "--bits applies with --codec cocktail only"),
        ({"warmup-rounds": -1}, {}, "--warmup-rounds"),
        ({"exact-every": -5}, {}, "--exact-every"),
        ({"warmup-steps": -1}, {}, "--warmup-steps"),
        ({}, {"SWARM_OVERLAP": "maybe"}, "--overlap"),
    ],
)
def test_bad_values_are_clear_errors(cli, environ, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(file=None, cli=cli, environ=environ)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=str(tmp_path / "missing.toml"), cli={}, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(file=str(bad), cli={}, environ={})
    bad.write_text("[training]\nmax_rounds = 'three'\n")
    with pytest.raises(ConfigError, match="--max-rounds"):
        load_config(file=str(bad), cli={}, environ={})


def test_fault_injection_comes_from_the_environment_only() -> None:
    config = load_config(file=None, cli={}, environ={"SWARM_FAULT": "round:3,after_results:2,scope:process"})
    assert (config.fault.kill_round, config.fault.kill_after_results, config.fault.kill_scope) == (
        3,
        2,
        "process",
    )
    assert (
        load_config(file=None, cli={}, environ={"SWARM_FAULT": "lose_results:2"}).fault.lose_results_round
        == 2
    )
    with pytest.raises(ConfigError, match="SWARM_FAULT"):
        load_config(file=None, cli={}, environ={"SWARM_FAULT": "explode"})


def test_cocktail_settings_and_switches() -> None:
    config = load_config(
        file=None,
        cli={"codec": "cocktail", "sparsity": 0.4, "topk": 0.5, "bits": 8, "overlap": False},
        environ={"SWARM_WARMUP_ROUNDS": "10"},
    )
    values = config.run.resolved()
    assert (values.codec, values.sparsity, values.topk, values.bits) == ("cocktail", 0.4, 0.5, 8)
    assert values.warmup_rounds == 10 and config.training.overlap is False
    assert load_config(file=None, cli={}, environ={}).training.overlap is True
    # Cocktail settings without a codec: fine for a joiner (it adopts the run's codec), an error
    # for the node that starts a run with the default fp32 codec.
    joiner = load_config(file=None, cli={"bits": 2}, environ={})
    with pytest.raises(ConfigError, match="--codec cocktail"):
        joiner.run.resolved()


def test_boolean_flags_have_a_negative_form() -> None:
    import argparse

    from node.config import add_flags

    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert vars(parser.parse_args(["--no-overlap"]))["overlap"] is False
    assert vars(parser.parse_args(["--overlap"]))["overlap"] is True
    assert "overlap" not in vars(parser.parse_args([]))


def test_adaptive_round_period_takes_the_shortest_grid_period_that_hides_communication() -> None:
    from swarm.averaging.schedule import period_grid, wanted_period

    grid = list(period_grid(2.0))
    assert grid[:8] == [2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0]
    assert grid[-1] <= 3600.0 < grid[-1] * 1.5
    # Neighbours at most 1.5x apart; any two share a round instant at least every 3 of the longer.
    for shorter, longer in itertools.pairwise(grid):
        assert longer / shorter <= 1.5
    for i, longer in enumerate(grid):
        for shorter in grid[:i]:
            assert any(abs(j * longer / shorter - round(j * longer / shorter)) < 1e-9 for j in (1, 2, 3))
    # With overlap a round of 3 s needs 3 x 1.25 = 3.75 s of compute: 2 s becomes 4 s; a round of
    # 7.5 s needs 9.4 s: 12 s (powers of two alone would have taken 16 s, leaving 8.5 s of it idle).
    assert wanted_period(2.0, 3.0, overlap=True) == 4.0
    assert wanted_period(2.0, 7.5, overlap=True) == 12.0
    assert wanted_period(2.0, 1.0, overlap=True) == 2.0
    # Without overlap communication should take at most a quarter of the period.
    assert wanted_period(2.0, 3.0, overlap=False) == 12.0
    # Bounded above.
    assert wanted_period(5.0, 1e9, overlap=True) <= 3600.0


def test_the_start_up_reachability_line_says_what_the_addresses_mean() -> None:
    from node.reachability import reachability

    lan = reachability(["/ip4/192.168.1.5/tcp/31337/p2p/Qm", "/ip4/127.0.0.1/tcp/31337/p2p/Qm"], [])
    assert "cannot dial" in lan and "--announce-maddr" in lan
    public = reachability(["/ip4/203.0.113.7/tcp/31337/p2p/Qm", "/ip4/8.8.8.8/tcp/1/p2p/Qm"], [])
    assert "peers anywhere" in public and "8.8.8.8" in public
    relayed = reachability(["/ip4/10.0.0.2/tcp/1/p2p/Qm", "/ip4/8.8.4.4/tcp/1/p2p/R/p2p-circuit/p2p/Qm"], [])
    assert "relay" in relayed
    announced = reachability(["/ip4/10.0.0.2/tcp/1/p2p/Qm"], ["/ip4/198.51.100.1/tcp/31337"])
    assert "198.51.100.1" in announced and "forwarded" in announced


def test_a_node_on_private_addresses_joining_a_public_peer_counts_as_behind_nat() -> None:
    from node.config import NetworkConfig
    from node.reachability import effective_reachability

    public_peer = "/ip4/8.8.8.8/tcp/31337/p2p/QmPeer"
    lan_peer = "/ip4/192.168.1.9/tcp/31337/p2p/QmPeer"
    home = ["/ip4/192.168.1.5/tcp/0"]
    assert effective_reachability(NetworkConfig(host_maddrs=home, peers=[public_peer])) == "private"
    # Same LAN or loopback swarm, a public address, a forwarded port, or the user's word: left alone.
    assert effective_reachability(NetworkConfig(host_maddrs=home, peers=[lan_peer])) == "auto"
    loopback = ["/ip4/127.0.0.1/tcp/0"]
    assert effective_reachability(NetworkConfig(host_maddrs=loopback, peers=[lan_peer])) == "auto"
    public_here = ["/ip4/203.0.114.5/tcp/0"]
    assert effective_reachability(NetworkConfig(host_maddrs=public_here, peers=[public_peer])) == "auto"
    forwarded = NetworkConfig(
        host_maddrs=home, peers=[public_peer], announce_maddrs=["/ip4/8.8.4.4/tcp/4001"]
    )
    assert effective_reachability(forwarded) == "auto"
    told = NetworkConfig(host_maddrs=home, peers=[public_peer], reachability="public")
    assert effective_reachability(told) == "public"
    with pytest.raises(ConfigError, match="reachability"):
        NetworkConfig(reachability="sometimes")
    with pytest.raises(ConfigError, match="multiaddr"):
        NetworkConfig(relays=["11.88.0.1:4001"])
    with pytest.raises(ConfigError, match="/p2p/"):
        NetworkConfig(relays=["/ip4/11.88.0.1/tcp/4001"])


def test_volunteer_caps_are_validated() -> None:
    config = load_config(file=None, cli={"max-upload-mbit": 50.0, "gpu-memory-gb": 12.0}, environ={})
    assert config.network.max_upload_mbit == 50.0 and config.training.gpu_memory_gb == 12.0
    for flag, value in (("max-upload-mbit", 0.0), ("gpu-memory-gb", -1.0), ("outlier-factor", 0.5)):
        with pytest.raises(ConfigError, match=flag.split("-")[0]):
            load_config(file=None, cli={flag: value}, environ={})


def test_nodes_cap_malloc_arenas_on_glibc() -> None:
    import platform

    from node.process import limit_malloc_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("M_ARENA_MAX is glibc's")
    assert limit_malloc_arenas() is True


def test_the_demo_gives_each_node_its_device_in_turn_and_refuses_unknown_ones(tmp_path: Path) -> None:
    from node.cli import main
    from node.demo import DemoOptions
    from node.demo import node_command as _node_command

    options = DemoOptions(nodes=3, devices=("cuda", "cpu"), until_round=7)
    commands = [
        _node_command(options, tmp_path, i, None if i == 0 else "/ip4/x", "r", None) for i in range(3)
    ]
    assert [c[c.index("--device") + 1] for c in commands] == ["cuda", "cpu", "cuda"]
    assert all(c[c.index("--until-round") + 1] == "7" and "--max-steps" not in c for c in commands)
    assert "--device" not in _node_command(DemoOptions(), tmp_path, 0, None, "r", None)
    assert "--no-overlap" not in _node_command(DemoOptions(), tmp_path, 0, None, "r", None)
    assert "--no-overlap" in _node_command(DemoOptions(overlap=False), tmp_path, 1, "/ip4/x", "r", None)
    with pytest.raises(ValueError, match="--devices takes auto, cpu or cuda"):
        DemoOptions(devices=("cuda", "gpu"))
    assert main(["demo", "--devices", "cuda,tpu"]) == 2


def test_a_round_is_sized_by_its_whole_duration_unless_its_group_changed() -> None:
    from swarm.averaging.outcome import RoundOutcome, Status
    from swarm.averaging.schedule import round_time_to_hide

    def outcome(*members: bytes) -> RoundOutcome:
        return RoundOutcome(status=Status.COMMITTED, members=list(members), duration_s=2.4, transfer_s=1.5)

    group = frozenset({b"a", b"b"})
    assert round_time_to_hide(outcome(b"b", b"a"), group) == 2.4  # same group: matchmaking counts
    assert round_time_to_hide(outcome(b"a", b"b", b"c"), group) == 1.5  # a joiner: the exchange only
    assert round_time_to_hide(outcome(b"a"), group) == 1.5  # a member left (its timeout is not hidden)
    assert round_time_to_hide(outcome(b"a", b"b"), frozenset()) == 1.5  # the first round
