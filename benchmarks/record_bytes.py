"""Benchmark: what signing costs each DHT record: bytes on the wire, and the time to seal and to open.

For each record family, a typical record (a heartbeat plain and in a closed run with relay
addresses, a checkpoint pointer, the run spec, the coordinator's address) is measured as hivemind
stores it (msgpack of the value): unsigned as protocol version 1 wrote it, and as the signed
envelope of version 2 (``swarm.dht.envelope``). Also the median time to seal and to open one (what
every node's DHT validator spends per record it stores, serves or receives).

    python benchmarks/record_bytes.py [--run-id swarm] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import machine, save, today

from swarm.dht.envelope import key_id, open_envelope, seal
from swarm.dht.pointer import Pointer
from swarm.dht.records import CoordinatorRecord, MemberRecord, RunSpec, pinned_run_id, record_key
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name
from swarm.run_settings import RunSettings

TIMING_REPEATS = 2000


def _records(key: Any, run_id: str) -> dict[str, tuple[str, str | None, dict[str, Any]]]:
    me = peer_id_of(public_key_protobuf(key.public_key()))
    addrs = tuple(f"/ip4/203.0.113.{i}/tcp/31337" for i in range(3))
    now = time.time()
    pointer = Pointer(
        run_id=run_id,
        round=1200,
        global_step=12000,
        manifest_hash="ab" * 32,
        total_bytes=10**9,
        provider=me,
        expires_at=now + 3600,
        addrs=addrs[:2],
    ).signed_by(key)
    spec = RunSpec(
        **asdict(RunSettings()),
        model_hash="cd" * 32,
        initial_digest="ef" * 32,
        data_hash="01" * 32,
        software="swarm-averaging/2",
    )
    return {
        "heartbeat": (
            "members",
            peer_name(me),
            MemberRecord(round=1200, global_step=12000, local_steps_per_round=10.0).to_wire(),
        ),
        "heartbeat, closed run, 3 addresses": (
            "members",
            peer_name(me),
            MemberRecord(
                round=1200, global_step=12000, local_steps_per_round=10.0, credential=b"c" * 180, addrs=addrs
            ).to_wire(),
        ),
        "checkpoint pointer": ("checkpoints", f"{peer_name(me)}/1200", pointer.to_wire()),
        "run spec": ("config", None, spec.to_wire()),
        "coordinator address": (
            "coordinator",
            None,
            CoordinatorRecord(address="coord.example.org:50051").to_wire(),
        ),
    }


def _median_us(action: Any) -> float:
    times = []
    for _ in range(TIMING_REPEATS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def measure(name: str) -> tuple[str, list[dict[str, Any]]]:
    """The run id (``name`` pinned to a new key, which signs everything) and a row per record."""
    with tempfile.TemporaryDirectory() as folder:
        generate_identity(Path(folder) / "id.key")
        key = load_identity(Path(folder) / "id.key")
    assert key is not None
    run_id = pinned_run_id(name, peer_id_of(public_key_protobuf(key.public_key())))
    rows = []
    for name, (family, subkey, payload) in _records(key, run_id).items():
        full_key = record_key(run_id, family)
        expires_at = float(payload["expires_at"]) if family == "checkpoints" else time.time() + 600
        signer = None if family == "checkpoints" else key
        sealed = seal(signer, key=full_key, subkey=subkey, payload=payload, expires_at=expires_at)
        before, after = (
            len(msgpack.packb(payload, use_bin_type=True)),
            len(msgpack.packb(sealed, use_bin_type=True)),
        )
        rows.append(
            {
                "record": name,
                "unsigned_bytes": before,
                "envelope_bytes": after,
                "added_bytes": after - before,
                "seal_us": _median_us(
                    partial(seal, signer, key=full_key, subkey=subkey, payload=payload, expires_at=expires_at)
                ),
                "open_us": _median_us(
                    partial(
                        open_envelope,
                        key=key_id(full_key),
                        subkey=subkey,
                        value=sealed,
                        expiration_time=expires_at,
                        now=time.time(),
                    )
                ),
            }
        )
    return run_id, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", default="swarm", help="the run's name (pinned to the signing key)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    run_id, rows = measure(args.run_id)
    lines = [
        f"# DHT record bytes and signing time ({today()})",
        "",
        f"Machine: {machine()}. Run id {run_id!r}; msgpack bytes as hivemind stores the value.",
        "`python benchmarks/record_bytes.py`.",
        "",
        "| record | unsigned (v1) | envelope (v2) | added | seal µs | open µs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['record']} | {r['unsigned_bytes']} | {r['envelope_bytes']} | +{r['added_bytes']} | {r['seal_us']:.0f} | {r['open_us']:.0f} |"
        for r in rows
    ]
    print("\n".join(lines))
    save(
        args.out,
        f"record_bytes-{today()}",
        {"date": today(), "machine": machine(), "run_id": run_id, "rows": rows},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
