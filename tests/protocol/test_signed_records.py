"""An outsider with a DHT of its own (hivemind's, no validator) cannot write in a member's name.

Two honest hosts of a run share their heartbeats; the outsider joins their DHT and stores, under
the second member's own subkey, a heartbeat that says it left (signed with the outsider's key, for
ten minutes), the unsigned records of the previous protocol version, and a checkpoint pointer in
the member's name. Every node's DHT refuses them on store and drops them from answers (the record
validator), so both the raw DHT read and the node's own read see the genuine heartbeat only.
"""

from __future__ import annotations

import asyncio

import hivemind
import msgpack
from hivemind.utils.timed_storage import get_dht_time

from swarm.dht.envelope import seal
from swarm.dht.pointer import Pointer
from swarm.dht.records import MemberRecord, checkpoints_key, members_key
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf
from tests.protocol.support import RUN_ID, announce, run, start_hosts

READS = 5
"""Reads of the key after the forgeries: every replica's answer has had a chance to reach the reader."""


def test_an_outsider_cannot_write_a_heartbeat_or_a_pointer_in_a_member_s_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    generate_identity(tmp_path / "outsider.key")
    outsider_key = load_identity(tmp_path / "outsider.key")
    assert outsider_key is not None

    async def attack() -> None:
        honest, victim = hosts = await start_hosts(2)
        outsider = None
        try:
            for host in hosts:
                await announce(host, ttl_s=60)
            announced = MemberRecord(round=0, global_step=0, local_steps_per_round=1.0).to_wire()
            peers = [str(m) for m in await honest.visible_maddrs()]
            outsider = await asyncio.to_thread(
                hivemind.DHT, initial_peers=peers, host_maddrs=["/ip4/127.0.0.1/tcp/0"], start=True
            )
            now = get_dht_time()
            leaving = MemberRecord(round=0, global_step=0, local_steps_per_round=1.0, leaving=True).to_wire()
            forged = seal(
                outsider_key,
                key=members_key(RUN_ID),
                subkey=victim.peer_name,
                payload=leaving,
                expires_at=now + 600,
            )
            pointer = Pointer(
                run_id=RUN_ID,
                round=10**9,
                global_step=10**9,
                manifest_hash="00" * 32,
                total_bytes=10**12,
                provider=peer_id_of(public_key_protobuf(outsider_key.public_key())),
                expires_at=now + 600,
            ).signed_by(outsider_key)
            writes = [
                (members_key(RUN_ID), victim.peer_name, forged),
                (members_key(RUN_ID), victim.peer_name, {"v": 1, **leaving}),  # the previous version's form
                (checkpoints_key(RUN_ID), f"{victim.peer_name}/{10**9}", seal(
                    None, key=checkpoints_key(RUN_ID), subkey=f"{victim.peer_name}/{10**9}",
                    payload=pointer.to_wire(), expires_at=pointer.expires_at,
                )),
            ]  # fmt: skip
            for key, subkey, value in writes:
                await asyncio.to_thread(outsider.store, key, value, now + 600, subkey=subkey)
            for _ in range(READS):
                raw = await asyncio.to_thread(honest.dht.get, members_key(RUN_ID), latest=True)
                assert raw is not None and set(raw.value) == {honest.peer_name, victim.peer_name}
                stored = raw.value[victim.peer_name]  # the DHT itself kept the victim's own record
                assert msgpack.unpackb(stored.value["h"])[3] == announced, "the DHT kept a forgery"
                members = await honest.dht_get_subkeys(members_key(RUN_ID), MemberRecord.from_wire)
                assert set(members) == {honest.peer_name, victim.peer_name}
                assert not members[victim.peer_name].leaving, "a forged leaving notice was believed"
                assert await victim.dht_get_subkeys(checkpoints_key(RUN_ID), Pointer.from_wire) == {}
            # The attack was made: the outsider (no validator) holds its forgery itself, and only it.
            own = await asyncio.to_thread(outsider.get, members_key(RUN_ID), latest=False)
            assert own is not None and own.value[victim.peer_name].value["v"] in (1, 2)
        finally:
            if outsider is not None:
                await asyncio.to_thread(outsider.shutdown)
            for host in hosts:
                await host.shutdown()

    run(attack())
