"""DHT records: round trips and validation of untrusted values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from swarm.dht.records import (
    MAX_PARAM_COUNT,
    CoordinatorRecord,
    MemberRecord,
    RecordError,
    RunSpec,
    pinned_run_id,
    run_name,
    run_pin,
    split_run_id,
    validate_run_id,
)

SPEC = RunSpec(
    model="tiny",
    model_hash="a" * 64,
    initial_digest="b" * 64,
    data=("stdlib",),
    data_hash="b" * 64,
    codec="cocktail",
    sparsity=0.1,
    topk=0.2,
    bits=4,
    warmup_rounds=0,
    exact_every=0,
    seq_len=128,
    batch_size=16,
    lr=3e-3,
    warmup_steps=50,
    total_steps=3000,
    weight_decay=0.01,
    seed=0,
    num_shards=16,
    software="swarm-averaging/1",
)


def test_run_spec_round_trips_and_reports_differences() -> None:
    assert RunSpec.from_wire(SPEC.to_wire()) == SPEC
    other = RunSpec.from_wire({**SPEC.to_wire(), "lr": 1e-3})
    assert SPEC.differences(other) == ["lr: 0.003 != 0.001"]


@pytest.mark.parametrize(
    "raw",
    [
        "not a dict",
        {**SPEC.to_wire(), "v": 2},
        {**SPEC.to_wire(), "seq_len": "128"},
        {**SPEC.to_wire(), "seq_len": True},
        {**SPEC.to_wire(), "seq_len": 0},
        {**SPEC.to_wire(), "model": "x" * 600},
        {**SPEC.to_wire(), "sparsity": 0.0},
        {**SPEC.to_wire(), "topk": 1.5},
        {**SPEC.to_wire(), "bits": 3},
        {**SPEC.to_wire(), "warmup_rounds": -1},
        {**SPEC.to_wire(), "codec": "zip"},
        {k: v for k, v in SPEC.to_wire().items() if k != "data_hash"},
    ],
)
def test_malformed_run_specs_are_rejected(raw) -> None:
    with pytest.raises(RecordError):
        RunSpec.from_wire(raw)


def test_member_records() -> None:
    record = MemberRecord(
        round=3, global_step=10, local_steps_per_round=2.5, leaving=False, wanted_period_s=8.0
    )
    assert MemberRecord.from_wire(record.to_wire()) == record
    with pytest.raises(RecordError):
        MemberRecord.from_wire({**record.to_wire(), "round": -1})
    with pytest.raises(RecordError):
        MemberRecord.from_wire({**record.to_wire(), "leaving": "no"})
    with pytest.raises(RecordError):
        MemberRecord.from_wire({**record.to_wire(), "wanted_period_s": 1e9})


def test_member_records_carry_bounded_addresses() -> None:
    relayed = "/ip4/11.88.0.1/tcp/4001/p2p/12D3KooWKuQSuvKyPaoqc4ygtXWXiwBiVQJEP6GzK3BVEgjJdgoh/p2p-circuit"
    record = MemberRecord(round=1, global_step=1, local_steps_per_round=1.0, addrs=(relayed,))
    assert MemberRecord.from_wire(record.to_wire()).addrs == (relayed,)
    older = {k: v for k, v in record.to_wire().items() if k != "addrs"}  # a node from before addresses
    assert MemberRecord.from_wire(older).addrs == ()
    for bad in (["/ip4/1.2.3.4"] * 17, ["no-slash"], [7], ["/" + "x" * 400], "/ip4/1.2.3.4"):
        with pytest.raises(RecordError):
            MemberRecord.from_wire({**record.to_wire(), "addrs": bad})


def test_member_records_say_whether_the_member_is_a_newcomer() -> None:
    record = MemberRecord(round=4, global_step=9, local_steps_per_round=1.0, fresh=True)
    assert MemberRecord.from_wire(record.to_wire()).fresh is True
    older = {k: v for k, v in record.to_wire().items() if k != "fresh"}  # a node from before the flag
    assert MemberRecord.from_wire(older).fresh is False
    with pytest.raises(RecordError, match="fresh"):
        MemberRecord.from_wire({**record.to_wire(), "fresh": 1})


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "ü"])
def test_run_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_run_id(bad)
    assert validate_run_id("demo-1.2_x") == "demo-1.2_x"


def test_coordinator_records() -> None:
    for address in ("coordinator.example.org:50051", "10.0.0.5:1", "[2001:db8::1]:50051"):
        assert CoordinatorRecord.from_wire(CoordinatorRecord(address=address).to_wire()).address == address
    for raw in (
        None,
        {"v": 1},
        {"v": 1, "address": 5},
        {"v": 1, "address": "no-port"},
        {"v": 1, "address": "host:0"},
        {"v": 1, "address": "host:70000"},
        {"v": 1, "address": "a/b:1"},
        {"v": 1, "address": "x" * 300 + ":1"},
        {"v": 99, "address": "host:1"},
    ):
        with pytest.raises(RecordError):
            CoordinatorRecord.from_wire(raw)


def test_a_run_id_pins_its_creator() -> None:
    creator, other = b"\x00\x24" + b"\x01" * 36, b"\x00\x24" + b"\x02" * 36
    full = pinned_run_id("demo-1.2", creator)
    name, pin = split_run_id(full)
    assert (name, pin) == ("demo-1.2", run_pin(creator)) and len(pin or "") == 16
    assert validate_run_id(full) == full and run_name(full) == "demo-1.2"
    assert run_pin(other) != pin  # another creator, another run
    assert split_run_id("demo-1.2") == ("demo-1.2", None)  # a dotted name is not a pin
    assert split_run_id("x.ABCDEFGHIJKLMNOP") == ("x.ABCDEFGHIJKLMNOP", None)  # pins are lower case
    with pytest.raises(ValueError, match="already pinned"):
        pinned_run_id(full, creator)
    with pytest.raises(ValueError, match="longer than"):
        pinned_run_id("n" * 48, creator)


def test_run_spec_names_the_model_s_parameter_count() -> None:
    counted = replace(SPEC, param_count=1_300_000_000)
    assert RunSpec.from_wire(counted.to_wire()) == counted
    older = SPEC.to_wire()  # a spec published before the field: it names no count
    assert "param_count" not in older and RunSpec.from_wire(older).param_count is None
    assert RunSpec.from_wire({**older, "param_count": None}).param_count is None  # an older swarm.json
    assert RunSpec.from_wire({**older, "param_count": MAX_PARAM_COUNT}).param_count == MAX_PARAM_COUNT
    for bad in (0, -1, MAX_PARAM_COUNT + 1, True, "5", 1.5):
        with pytest.raises(RecordError, match="param"):
            RunSpec.from_wire({**older, "param_count": bad})
