"""One checkpoint provider for benchmarks/pull.py: a libp2p host with Swarm's checkpoint service.

It runs exactly the code a node serves checkpoints with (``swarm.checkpoint.service``) on a synthetic
checkpoint of ``--size-mb`` (seeded random bytes, so every provider holds the same files and the
same manifest hash), publishes its signed pointer in the DHT when ``--publish`` is set, writes its
addresses to ``--status``, and serves until killed.

    python benchmarks/checkpoint_provider.py --status p0.json --size-mb 256 --publish
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

from swarm.checkpoint.manifest import build_manifest
from swarm.checkpoint.service import CheckpointService
from swarm.checkpoint.store import CheckpointStore
from swarm.dht.records import MemberRecord, members_key
from swarm.identity import generate_identity, load_identity
from swarm.p2p import HostOptions, SwarmHost

HEARTBEAT_TTL_S = 120.0


def synthetic_files(size_mb: int) -> dict[str, bytes]:
    rng = random.Random(1234)
    return {
        "model.safetensors": b"".join(rng.randbytes(1 << 20) for _ in range(size_mb)),  # 1 MiB at a time
        "config.json": b'{"model_type":"llama"}',
        "swarm.json": b'{"format":1}',
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host-maddr", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--peer", default=None, help="multiaddr of the first provider (the others)")
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--status", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="swarm-provider-"))
    generate_identity(work / "id.key")
    host = await SwarmHost.start(
        HostOptions(
            host_maddrs=(args.host_maddr,),
            initial_peers=(args.peer,) if args.peer else (),
            identity_path=str(work / "id.key"),
        )
    )
    files = synthetic_files(args.size_mb)
    manifest = build_manifest(files, run_id="pullbench", round=100, global_step=100)
    service = CheckpointService(host, CheckpointStore(work / "store"), run_id="pullbench",
                                key=load_identity(work / "id.key"))  # fmt: skip
    service.store.add(manifest, files)
    del files
    await service.start()
    if args.publish:
        await service.publish(manifest)
    maddrs = [f"{m}" for m in await host.visible_maddrs()]
    Path(args.status).write_text(json.dumps({"maddrs": maddrs, "manifest": manifest.hash}))
    # A member's heartbeat at the checkpoint's round: readers follow only checkpoints that live
    # members attest (swarm.dht.attestation), and this provider stands in for one.
    beat = MemberRecord(round=manifest.round, global_step=manifest.global_step, local_steps_per_round=1.0)
    while True:
        await host.dht_store(
            members_key("pullbench"), beat.to_wire(), ttl_s=HEARTBEAT_TTL_S, subkey=host.peer_name
        )
        await asyncio.sleep(HEARTBEAT_TTL_S / 3)


if __name__ == "__main__":
    asyncio.run(main())
