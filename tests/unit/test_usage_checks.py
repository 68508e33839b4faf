"""The checks behind a node's usage errors, one by one (tests/swarm/test_usage_errors.py runs them as
real processes): each names what is wrong, and a service manager does not restart on exit status 2."""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from node.agreement import check_param_count, check_saved_spec
from node.config import load_config
from node.errors import EXIT_TRY_AGAIN, EXIT_USAGE, NodeError, TryAgainError
from node.network import check_addresses
from node.preflight import check_before_start
from node.resume import ResumeError
from node.trainer import pick_device
from swarm.data.corpus import DataError, check_sources
from swarm.models.build import ModelError, check_fits, resolve_model
from tests.unit.test_records import SPEC

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PEER_ID = "12D3KooWS49y3XXcCHCJXBqdqdeT2ouL38JSQTC9g78pT1EQFi8K"


def test_exit_statuses_tell_a_mistake_from_what_may_pass() -> None:
    assert NodeError("x").exit_status == EXIT_USAGE == 2
    assert TryAgainError("x").exit_status == EXIT_TRY_AGAIN != EXIT_USAGE


@pytest.mark.parametrize("unit", ["swarm-node.service", "swarm-coordinator.service"])
def test_systemd_units_do_not_restart_on_a_usage_error(unit: str) -> None:
    lines = (DEPLOY / "systemd" / unit).read_text().splitlines()
    assert "Restart=on-failure" in lines and f"RestartPreventExitStatus={EXIT_USAGE}" in lines


@pytest.mark.parametrize(
    ("flag", "maddr", "reason"),
    [
        ("peer", f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_ID[:-6]}", "multihash"),
        ("peer", f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_ID[:-1]}0", "Invalid character"),
        ("peer", f"/ip4/300.1.1.1/tcp/4001/p2p/{PEER_ID}", "300.1.1.1"),
        ("relay", f"/ip4/1.2.3.4/tcp/99999/p2p/{PEER_ID}", "65536"),
        ("host-maddr", "/ip4/0.0.0.0/tcpx/1", "tcpx"),
    ],
)
def test_a_malformed_address_is_named(flag: str, maddr: str, reason: str) -> None:
    config = load_config(file=None, cli={flag: [maddr]}, environ={})
    with pytest.raises(NodeError, match="malformed") as raised:
        check_addresses(config)
    assert f"--{flag} {maddr} is malformed" in str(raised.value) and reason in str(raised.value)
    check_addresses(load_config(file=None, cli={"peer": [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_ID}"]}, environ={}))


def test_data_sources_are_checked_without_reading_them(tmp_path: Path) -> None:
    check_sources(["stdlib"])
    (tmp_path / "a.txt").write_text("hello")
    check_sources([str(tmp_path), str(tmp_path / "a.txt")])
    with pytest.raises(DataError, match="no such file or folder"):
        check_sources([str(tmp_path / "absent")])
    (tmp_path / "b.bin").write_bytes(b"\x00")
    with pytest.raises(DataError, match=r"unsupported data file type '\.bin'"):
        check_sources([str(tmp_path / "b.bin")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no text"):
        check_sources([str(tmp_path / "empty")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_data_file_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_text("secret")
    locked.chmod(0)
    with pytest.raises(DataError, match=r"locked\.txt: cannot be read"):
        check_sources([str(locked)])


def test_a_model_must_fit_the_byte_tokens_and_the_sequence_length() -> None:
    tiny = resolve_model("tiny")
    check_fits(tiny, seq_len=1024)
    small_vocab = tiny.__class__("mine", {**tiny.config, "vocab_size": 100}, None)
    with pytest.raises(ModelError, match="vocabulary of 100 tokens; the data's byte tokens need 256"):
        check_fits(small_vocab, seq_len=128)
    with pytest.raises(ModelError, match="1024 positions, fewer than the run's sequence length 2048"):
        check_fits(tiny, seq_len=2048)


def test_a_node_starting_a_run_checks_its_defaults_and_a_joiner_what_it_set(tmp_path: Path) -> None:
    assert check_before_start(load_config(file=None, cli={"device": "cpu"}, environ={})) == torch.device(
        "cpu"
    )
    peer = [f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_ID}"]
    # A joiner's sequence length comes from the run: a long one is checked once it is adopted.
    joiner = load_config(file=None, cli={"peer": peer, "device": "cpu", "seq-len": 4096}, environ={})
    check_before_start(joiner)
    with pytest.raises(NodeError, match="fewer than the run's sequence length 4096"):
        check_before_start(load_config(file=None, cli={"device": "cpu", "seq-len": 4096}, environ={}))
    with pytest.raises(NodeError, match=f"--data {tmp_path / 'nope'}: no such file"):
        check_before_start(
            load_config(file=None, cli={"peer": peer, "data": [str(tmp_path / "nope")]}, environ={})
        )
    with pytest.raises(NodeError, match="model 'huge' is neither a preset"):
        check_before_start(load_config(file=None, cli={"peer": peer, "model": "huge"}, environ={}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: --device cuda is no mistake here")
def test_cuda_without_cuda_is_a_usage_error() -> None:
    with pytest.raises(NodeError, match="--device cuda: torch sees no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_a_joiner_s_model_must_have_the_parameter_count_the_run_names(tmp_path: Path) -> None:
    spec = replace(SPEC, param_count=1000)
    check_param_count("r", spec, 1000)
    check_param_count("r", SPEC, 999)  # a spec from before the field names no count
    with pytest.raises(NodeError, match="999 trainable parameters, run 'r''s has 1000"):
        check_param_count("r", spec, 999)
    # A checkpoint or resume state saved before specs named a count is still this run's.
    check_saved_spec(asdict(SPEC), spec, tmp_path)
    with pytest.raises(ResumeError, match="param_count: 7 != 1000"):
        check_saved_spec(asdict(replace(SPEC, param_count=7)), spec, tmp_path)
