"""The outsiders of ``intruder.py``: hosts without a credential, in the benchmark's process, that
join a closed run's swarm through one member's address.

``Flooder`` sends join requests to every member at a fixed rate and counts the refusals.

``Rewriter`` rewrites every record of the run it can reach, about once a second. Each pass it reads
the members' heartbeats and checkpoint pointers as they lie in the DHT and writes, straight through
hivemind's ``store`` (not ``SwarmHost.dht_store``, which would seal them honestly):

- under each member's own heartbeat subkey: the member's heartbeat with ``leaving`` set, re-signed
  with the outsider's key (once for ten minutes, inside the family's lifetime, so that only the
  signature is wrong; once for an hour); the member's genuine envelope kept an hour longer than it
  allows; and the unsigned record of the previous protocol version;
- its own heartbeat, sealed with its own key, claiming round ``FORGED_ROUND`` (it holds no credential);
- its own checkpoint pointer of round ``FORGED_ROUND``, and its own pointers under every member's
  pointer subkey (``<provider>/<round>``);
- a run spec with other shards and codec, for seven days, and a coordinator record naming
  ``FORGED_COORDINATOR``, both sealed with its own key (``writer`` records: anyone may sign one).

Every store leaves the outsider's own DHT node out (``exclude_self``: it runs the same validator),
so hivemind's answer is the honest replicas': accepted or refused. The outsider also serves the
run's protocols and counts the streams members open to it: a member that believed its heartbeat or
its pointer would dial it. Its audit reads back, as any member would, who signed the run spec and
the coordinator record the DHT serves, and whether every heartbeat is its own member's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
from hivemind.utils.timed_storage import get_dht_time

from swarm.averaging.context import protocol_name
from swarm.checkpoint.wire import PROTOCOL as CHECKPOINT_PROTOCOL
from swarm.dht.envelope import EnvelopeError, key_id, open_envelope, seal
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
from swarm.p2p import HostOptions, StreamHandler, SwarmHost
from swarm.peer_names import peer_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream

FORGED_ROUND = 10**9
FORGED_COORDINATOR = "203.0.113.9:50051"
"""TEST-NET-3: an address that reaches nobody."""
FORGED_CODEC = "fp16"
"""The forged spec's codec (the run's is fp32): a member that adopted it says so in its history."""
PASS_INTERVAL_S = 1.0
STORE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
HOUR_S = 3600.0
HEARTBEAT_TTL_S = 600.0
SPEC_TTL_S = 7 * 24 * 3600.0
RUN_PROTOCOLS = ("rendezvous", "shard", "state", "presence")


class Flooder:
    """An outsider's host in this process that sends join requests without a credential to every
    member, ``rate`` per second in all, and counts the answers (each should be a refusal)."""

    def __init__(self, entry: str, run_id: str, members: list[bytes], rate: float):
        self.entry, self.run_id, self.members, self.rate = entry, run_id, members, rate
        self.sent = self.refused = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        host = await SwarmHost.start(
            HostOptions(initial_peers=(self.entry,), host_maddrs=("/ip4/127.0.0.1/tcp/0",))
        )
        protocol = protocol_name(self.run_id, "rendezvous")
        try:
            while not self._stop.is_set():
                for member in self.members:
                    if self._stop.is_set():
                        break
                    started = time.monotonic()
                    self.sent += 1
                    try:
                        stream = await host.open_stream(
                            member, protocol, timeout_s=5.0, max_frame_bytes=65536
                        )
                        try:
                            await stream.send(
                                pb.Frame(join=pb.JoinRequest(run_id=self.run_id, round=1, weight=1.0))
                            )
                            frame = await asyncio.wait_for(stream.recv(), timeout=5.0)
                            self.refused += frame.WhichOneof("body") == "busy"
                        finally:
                            stream.close()
                    except Exception:
                        self.failed += 1
                    await asyncio.sleep(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))
        finally:
            await host.shutdown()


class Rewriter:
    """Starts its host with ``start``, rewrites from ``begin`` until ``stop``, which returns the tally."""

    def __init__(self, entry: str, run_id: str):
        self.entry, self.run_id = entry, run_id
        self.stores: dict[str, dict[str, int]] = {}
        """What kind of write -> {"sent", "accepted", "failed"} (failed: no answer in time)."""
        self.contacts: dict[str, int] = {}
        """Protocol -> streams members opened to the outsider."""
        self.passes = 0
        self.cpu_s = 0.0
        """CPU seconds the outsider used while rewriting: this process, its DHT process and its p2pd."""
        self.audit: dict[str, Any] = {}
        self.peer_name = ""
        self._spec: RunSpec | None = None
        self._ready, self._go, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"the rewriting outsider did not start: {self._error}")

    def begin(self) -> None:
        self._go.set()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._go.set()
        self._thread.join(timeout=STOP_TIMEOUT_S)
        return {
            "peer": self.peer_name,
            "passes": self.passes,
            "cpu_s": round(self.cpu_s, 1),
            "stores": self.stores,
            "contacts_from_members": self.contacts,
            "audit": self.audit,
            "error": None if self._error is None else repr(self._error),
        }

    async def _main(self) -> None:
        try:
            host = await SwarmHost.start(
                HostOptions(initial_peers=(self.entry,), host_maddrs=("/ip4/127.0.0.1/tcp/0",))
            )
        except BaseException as e:
            self._error = e
            self._ready.set()
            raise
        try:
            self.peer_name = host.peer_name
            for protocol in [*(protocol_name(self.run_id, p) for p in RUN_PROTOCOLS), CHECKPOINT_PROTOCOL]:
                await host.add_handler(protocol, self._counter(protocol), max_frame_bytes=65536)
            self._ready.set()
            await asyncio.to_thread(self._go.wait)
            helpers = [host.dht.pid, *([host.p2p._child.pid] if host.p2p._child is not None else [])]
            cpu_s = _cpu_s(helpers)
            while not self._stop.is_set():
                started = time.monotonic()
                await self._rewrite(host)
                self.passes += 1
                await asyncio.sleep(max(0.0, PASS_INTERVAL_S - (time.monotonic() - started)))
            self.cpu_s = _cpu_s(helpers) - cpu_s
            self.audit = await self._audit(host)
        except Exception as e:
            self._error = e
        finally:
            self._ready.set()
            await host.shutdown()

    def _counter(self, protocol: str) -> StreamHandler:
        async def handle(peer: bytes, stream: FramedStream) -> None:
            self.contacts[protocol] = self.contacts.get(protocol, 0) + 1

        return handle

    async def _rewrite(self, host: SwarmHost) -> None:
        """One pass: read what the DHT holds, write every forgery, count the answers."""
        now, run = get_dht_time(), self.run_id
        writes = await self._heartbeat_forgeries(host, now)
        writes += await self._pointer_forgeries(host, now)
        if self._spec is None:  # the genuine one, read once: later reads may return our own
            self._spec = await host.dht_get(config_key(run), RunSpec.from_wire)
        if self._spec is not None:
            spec = replace(self._spec, num_shards=self._spec.num_shards + 1, codec=FORGED_CODEC)
            writes.append(("run spec", config_key(run), None, self._sealed(host, config_key(run), None, spec.to_wire(), now + SPEC_TTL_S), now + SPEC_TTL_S))  # fmt: skip
        coordinator = CoordinatorRecord(address=FORGED_COORDINATOR).to_wire()
        writes.append(("coordinator", coordinator_key(run), None, self._sealed(host, coordinator_key(run), None, coordinator, now + HOUR_S), now + HOUR_S))  # fmt: skip
        await asyncio.gather(*(self._store(host, *write) for write in writes))

    async def _heartbeat_forgeries(self, host: SwarmHost, now: float) -> list[tuple]:
        key, writes = members_key(self.run_id), []
        for subkey, item in await _entries(host, key):
            if subkey == host.peer_name:
                continue
            try:
                payload = msgpack.unpackb(item.value["h"], raw=False)[3]
            except (TypeError, KeyError, IndexError, ValueError, msgpack.UnpackException):
                continue
            leaving = {**payload, "leaving": True}
            for kind, ttl_s in (("heartbeat re-signed, 10 min", HEARTBEAT_TTL_S), ("heartbeat re-signed, 1 h", HOUR_S)):  # fmt: skip
                writes.append(
                    (kind, key, subkey, self._sealed(host, key, subkey, leaving, now + ttl_s), now + ttl_s)
                )
            writes.append(
                ("heartbeat kept 1 h longer", key, subkey, item.value, item.expiration_time + HOUR_S)
            )
            writes.append(("heartbeat unsigned (v1)", key, subkey, leaving, now + HEARTBEAT_TTL_S))
        maddrs = tuple(m.split("/p2p/")[0] for m in await host.visible_maddrs())
        own = MemberRecord(
            round=FORGED_ROUND, global_step=FORGED_ROUND, local_steps_per_round=1.0, addrs=maddrs
        )
        expires = now + HEARTBEAT_TTL_S
        writes.append(("own heartbeat, round 1e9", key, host.peer_name, self._sealed(host, key, host.peer_name, own.to_wire(), expires), expires))  # fmt: skip
        return writes

    async def _pointer_forgeries(self, host: SwarmHost, now: float) -> list[tuple]:
        key, writes = checkpoints_key(self.run_id), []
        maddrs = tuple(m.split("/p2p/")[0] for m in await host.visible_maddrs())[:8]

        def pointer(round_id: int, subkey: str, kind: str) -> tuple:
            assert host.signing_key is not None
            signed = Pointer(
                run_id=self.run_id, round=round_id, global_step=round_id, manifest_hash="0" * 64,
                total_bytes=1 << 30, provider=host.peer_id, expires_at=now + HOUR_S, addrs=maddrs,
            ).signed_by(host.signing_key)  # fmt: skip
            value = seal(None, key=key, subkey=subkey, payload=signed.to_wire(), expires_at=signed.expires_at)
            return (kind, key, subkey, value, signed.expires_at)

        writes.append(pointer(FORGED_ROUND, f"{host.peer_name}/{FORGED_ROUND}", "own pointer, round 1e9"))
        for subkey, _ in await _entries(host, key):
            provider, _, round_text = subkey.rpartition("/")
            if provider != host.peer_name and round_text.isdigit():
                writes.append(pointer(int(round_text), subkey, "pointer over a member's"))
        return writes

    def _sealed(self, host: SwarmHost, key: str, subkey: str | None, payload: Any, expires_at: float) -> Any:
        return seal(host.signing_key, key=key, subkey=subkey, payload=payload, expires_at=expires_at)

    async def _store(
        self, host: SwarmHost, kind: str, key: str, subkey: str | None, value: Any, expiration: float
    ) -> None:
        tally = self.stores.setdefault(kind, {"sent": 0, "accepted": 0, "failed": 0})
        tally["sent"] += 1
        try:
            future = host.dht.store(
                key, value, expiration, subkey=subkey, return_future=True, exclude_self=True
            )
            tally["accepted"] += bool(await asyncio.wait_for(future, STORE_TIMEOUT_S))
        except Exception:
            tally["failed"] += 1

    async def _audit(self, host: SwarmHost) -> dict[str, Any]:
        """What a member reading the DHT now is served: who signed each record."""
        now, run = get_dht_time(), self.run_id
        audit: dict[str, Any] = {}
        for family, key in (("run spec", config_key(run)), ("coordinator", coordinator_key(run))):
            found = await host.dht.get(key, latest=True, return_future=True)
            audit[f"{family} signed by"] = None if found is None else self._signer(key, None, found, now)
        heartbeats = [(s, self._signer(members_key(run), s, item, now)) for s, item in await _entries(host, members_key(run))]  # fmt: skip
        audit["heartbeats of members"] = sum(s != host.peer_name for s, _ in heartbeats)
        audit["heartbeats not signed by their member"] = sum(
            s != host.peer_name and s != who for s, who in heartbeats
        )
        return audit

    def _signer(self, key: str, subkey: str | None, found: Any, now: float) -> str:
        """``outsider``, the signer's peer name, or why the record does not open."""
        try:
            envelope = open_envelope(
                key=key_id(key),
                subkey=subkey,
                value=found.value,
                expiration_time=found.expiration_time,
                now=now,
            )
        except EnvelopeError as e:
            return f"invalid: {e}"
        name = peer_name(envelope.signer)
        return "outsider" if name == self.peer_name else name


async def _entries(host: SwarmHost, key: str) -> list[tuple[str, Any]]:
    """The (subkey, value with expiration) pairs of a dictionary record, as the DHT serves them."""
    found = await host.dht.get(key, latest=True, return_future=True)
    if found is None or not isinstance(found.value, dict):
        return []
    return [(s, item) for s, item in found.value.items() if isinstance(s, str)]


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by this process and by the processes ``pids`` (Linux's /proc)."""
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total
