"""Each setting is declared once: its flag, variable, TOML key, checks, run spec field and docs follow.

These tests walk the declarations themselves, so a setting added tomorrow is covered by them
without a line here: it gets a flag in its ``--help`` group, an environment variable, a TOML key,
the same bounds on the command line and in a run spec read from the DHT, and a row in
docs/configuration.md (which must be regenerated, or CI fails).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from node.config import FLAGS, SETTINGS, ConfigError, add_flags, load_config
from node.config_docs import DOCS, render
from swarm.dht.records import RecordError, RunSpec
from swarm.run_settings import RunSettings
from swarm.settings import GROUPS, Declared, declared

RUN_ITEMS = declared(RunSettings, "run")
SPEC = RunSpec(**asdict(RunSettings()), model_hash="m", initial_digest="", data_hash="d", software="s")


def _out_of_range(item: Declared) -> Any:
    """A value of the right type that the declaration refuses, or None where every value is fine."""
    meta = item.meta
    if meta.choices:
        return "nonsense" if item.kind == "str" else max(meta.choices) + 1
    if meta.pattern is not None:
        return "not hex"
    low = meta.above if meta.above is not None else meta.at_least
    if low is not None:
        below = low - 1 if meta.at_least is not None else low
        return float(below) if item.kind == "float" else int(below)
    return None


def test_docs_configuration_is_generated_from_the_declarations() -> None:
    assert DOCS.read_text() == render(), "docs/configuration.md is stale: run python -m node.config_docs"
    for item in SETTINGS.values():
        assert f"`[{item.section}] {item.name}`" in render()


def test_every_flag_is_in_its_help_group_with_its_choices_and_default() -> None:
    parser = argparse.ArgumentParser(prog="join")
    add_flags(parser)
    titles = {group.title: group for group in parser._action_groups}
    for flag, item in FLAGS.items():
        group = titles[GROUPS[item.meta.group]]
        (action,) = [a for a in group._group_actions if f"--{flag}" in a.option_strings]
        if item.meta.choices:
            assert tuple(action.choices or ()) == item.meta.choices
        if item.default not in (None, "", [], ()):
            assert "(default: " in (action.help or "")
        # Help speaks of flags, never of the config's internal field names.
        assert not any(
            name in (action.help or "") for name in ("_s ", "_s)", "round_period_s", "join_timeout_s")
        )


def test_join_help_is_grouped_and_shows_no_internal_names() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "node", "join", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for title in GROUPS.values():
        assert title + ":" in shown
    assert "{fp32,fp16,cocktail}" in shown and "{auto,cpu,cuda}" in shown
    assert "--checkpoint-every ROUNDS" in shown and "(default: 50;" in shown
    assert "round_period_s" not in shown and "join_timeout_s" not in shown


@pytest.mark.parametrize("item", RUN_ITEMS, ids=lambda item: item.name)
def test_a_run_setting_has_every_source_and_one_set_of_checks(item: Declared) -> None:
    assert item.flag in FLAGS and SETTINGS[("run", item.name)] == item
    assert item.env == "SWARM_" + item.flag.upper().replace("-", "_")
    # The default round-trips through the DHT record.
    assert getattr(RunSpec.from_wire(SPEC.to_wire()), item.name) == item.default
    bad = _out_of_range(item)
    if bad is None:
        return
    # The same declaration refuses it on the command line, in the environment and in a run spec.
    with pytest.raises(ConfigError, match=f"--{item.flag}"):
        load_config(file=None, cli={item.flag: bad}, environ={})
    with pytest.raises(ConfigError, match=f"--{item.flag}"):
        load_config(file=None, cli={}, environ={item.env: str(bad)})
    with pytest.raises(RecordError, match=f"--{item.flag}"):
        RunSpec.from_wire({**SPEC.to_wire(), item.name: bad})


def test_a_spec_from_an_earlier_version_reads_its_missing_settings_as_their_defaults() -> None:
    wire = SPEC.to_wire()
    del wire["owner_key"], wire["weight_decay"]
    assert RunSpec.from_wire(wire) == SPEC
    del wire["model_hash"]  # not a setting: a spec without it is malformed
    with pytest.raises(RecordError, match="model_hash"):
        RunSpec.from_wire(wire)


def test_a_spec_keeps_its_types_strict() -> None:
    for name, value in (("lr", "0.1"), ("seq_len", 128.0), ("codec", 5), ("seq_len", True)):
        with pytest.raises(RecordError, match=name.replace("_", "-")):
            RunSpec.from_wire({**SPEC.to_wire(), name: value})
    assert RunSpec.from_wire({**SPEC.to_wire(), "lr": 1e-3}).lr == 1e-3
    assert RunSpec.from_wire(replace(SPEC, data=("a.txt", "b.txt")).to_wire()).data == ("a.txt", "b.txt")


def test_the_environment_and_the_file_take_every_kind(tmp_path: Path) -> None:
    config = load_config(
        file=None,
        cli={},
        environ={
            "SWARM_DATA": "a.txt, b.txt",
            "SWARM_OVERLAP": "off",
            "SWARM_SEQ_LEN": "64",
            "SWARM_LR": "1e-3",
            "SWARM_WEIGHT_DECAY": "0",
            "SWARM_AGGREGATION": "centered-clip",
        },
    )
    settings = config.run.resolved()
    assert (settings.data, settings.seq_len, settings.lr, settings.weight_decay) == (
        ("a.txt", "b.txt"),
        64,
        1e-3,
        0.0,
    )
    assert config.training.overlap is False and config.defence.aggregation == "centered-clip"
    with pytest.raises(ConfigError, match=r"--seq-len = '1\.5': expected a whole number"):
        load_config(file=None, cli={}, environ={"SWARM_SEQ_LEN": "1.5"})
    path = tmp_path / "node.toml"
    path.write_text('[run]\nseq_len = 64\ndata = ["a.txt"]\n[rounds]\nheartbeat_ttl_s = 20\n')
    config = load_config(file=str(path), cli={}, environ={})
    assert (config.run.given, config.rounds.heartbeat_ttl_s) == ({"seq_len": 64, "data": ("a.txt",)}, 20.0)
    path.write_text("[run]\nsequence_length = 64\n")
    with pytest.raises(ConfigError, match="has no setting 'sequence_length'"):
        load_config(file=str(path), cli={}, environ={})


def test_pull_takes_the_node_s_download_cap_from_the_same_declaration() -> None:
    item = SETTINGS[("checkpoints", "max_gb")]
    assert item.flag == "max-checkpoint-gb" and item.env == "SWARM_MAX_CHECKPOINT_GB"
    assert load_config(file=None, cli={}, environ={item.env: "2.5"}).checkpoints.max_bytes == int(2.5 * 2**30)
    with pytest.raises(ConfigError, match="--max-checkpoint-gb"):
        load_config(file=None, cli={"max-checkpoint-gb": 0.0}, environ={})
    shown = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--max-checkpoint-gb GIB" in shown and "(default: 64.0;" in shown
    refused = subprocess.run(
        [sys.executable, "-m", "node", "pull", "--peer", "/p2p/x", "--out", "x", "--max-checkpoint-gb", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "--max-checkpoint-gb must be above 0" in refused.stderr
