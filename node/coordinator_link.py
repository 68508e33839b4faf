"""Coordinator reporting: find the run's coordinator, report each committed round and announce
checkpoints there, and put the coordinator archive's checkpoint pointers into the DHT.

The coordinator is optional: reports go through ``node.reporting.Reporter``'s own thread, and
training never waits for it. A node without --coordinator reports to the one a member published.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import torch
from google.protobuf.message import DecodeError

from node.progress import Progress
from node.reporting import Reporter, local_address_towards
from node.sections import NodeConfig
from node.trainer import describe_device
from swarm.averaging.outcome import Contribution, RoundOutcome, Status
from swarm.averaging.state import GlobalCopy
from swarm.checkpoint.manifest import Manifest
from swarm.checkpoint.wire import pointer_from_pb
from swarm.dht.pointer import PointerError
from swarm.dht.records import CoordinatorRecord, checkpoints_key, coordinator_key, run_pin, split_run_id
from swarm.p2p import SwarmHost
from swarm.peer_names import peer_name
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as ckpt_pb
from swarm.proto.swarm.coordinator.v1 import coordinator_pb2 as coord_pb

logger = logging.getLogger("swarm.node")

DISCOVERY_INTERVAL_S = 30.0
"""How often a node without a coordinator looks for one a member published in the DHT."""
COORDINATOR_RECORD_TTL_S = 24 * 3600.0
"""Lifetime of the coordinator's address in the DHT: members store the creator's record again, so it
outlives the creator's node by this much."""
COORDINATOR_ANNOUNCE_INTERVAL_S = 150.0
"""How often the address is stored again: four times per lifetime, so one lost store does not let it lapse."""
ARCHIVE_POINTERS_PER_BATCH = 100
"""At most this many archive pointers from one answer of the coordinator go into the DHT."""
ARCHIVE_RESTORE_INTERVAL_S = 900.0
"""An archive pointer is stored in the DHT at most this often (the coordinator sends it with every
answer; a DHT store every few seconds for each would be traffic for nothing)."""
MIN_POINTER_TTL_S = 60.0
"""A pointer about to expire is still stored for this long (the DHT wants an expiry ahead)."""


class CoordinatorLink:
    """This node's link to the run's coordinator, once it knows one."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        host: SwarmHost,
        device: torch.device,
        progress: Progress,
        started: float,
        credential: bytes = b"",
    ) -> None:
        self.config = config
        self.credential = credential
        """This node's credential in a closed run (its writes carry it), as the run's gate read it."""
        self.host = host
        self.device = device
        self.progress = progress
        self.reporter: Reporter | None = None
        """The coordinator's reporter: from the start with --coordinator, else once a member publishes
        one in the DHT (and never when none does: the coordinator is optional)."""
        self._metrics_port: int | None = None
        self._archive_stored: dict[tuple[str, bytes], float] = {}
        self._last_report_t = started

    def start(self, metrics_port: int | None) -> None:
        """Report to the configured coordinator from now on (``keep_up`` then finds one otherwise)."""
        self._metrics_port = metrics_port
        if self.config.output.coordinator is not None:
            self._make_reporter(self.config.output.coordinator)

    async def keep_up(self) -> None:
        """Keep the coordinator's address in the DHT: the run's creator signs the one it was given,
        every member stores the creator's record again; a node without --coordinator reports to it."""
        own = self.config.output.coordinator
        if own is not None and split_run_id(self.config.run.run_id)[1] == run_pin(self.host.peer_id):
            await asyncio.gather(self._announce_coordinator(own), self._keep_creators_record())
            return
        if own is not None:
            logger.info("reporting to coordinator %s (only the run's creator names one in the DHT)", own)
        await self._keep_creators_record()

    def stop(self) -> None:
        """Flush what is queued (briefly) and stop the reporter's thread; blocks."""
        if self.reporter is not None:
            self.reporter.stop()

    def _make_reporter(self, address: str) -> None:
        cfg = self.config
        metrics_url = cfg.output.metrics_advertise or ""
        if not metrics_url and self._metrics_port is not None:
            metrics_url = f"{local_address_towards(address)}:{self._metrics_port}"
        loop = asyncio.get_running_loop()

        def arrived(raw: list[bytes]) -> None:  # on the reporter's thread
            asyncio.run_coroutine_threadsafe(self._store_archive_pointers(raw), loop)

        if self.host.signing_key is None:
            logger.warning("no Ed25519 identity: this node cannot sign reports, so it does not report")
            return
        self.reporter = Reporter(
            address, key=self.host.signing_key, credential=self.credential,
            run_id=cfg.run.run_id, peer_id=self.host.peer_name, device=describe_device(self.device),
            metrics_url=metrics_url, addrs=tuple(m.split("/p2p/")[0] for m in self.progress.maddrs),
            on_archive_pointers=arrived,
        )  # fmt: skip
        self.reporter.start()

    async def _keep_creators_record(self) -> None:
        """Read the coordinator's address the run's creator signed, report there (without a
        --coordinator of our own), and store the record again, as it is, every 150 s."""
        key, sealed = coordinator_key(self.config.run.run_id), None
        while True:
            try:
                found = await self.host.dht_get_sealed(key, CoordinatorRecord.from_wire)
                if found is not None and (sealed is None or found.expires_at > sealed.expires_at):
                    sealed = found
                if sealed is not None:
                    if self.reporter is None:
                        logger.info(
                            "the run's creator names coordinator %s: reporting there", sealed.record.address
                        )
                        self._make_reporter(sealed.record.address)
                    await self.host.dht_store_sealed(key, sealed)
            # The boundary of a background task: whatever the DHT's process raised, look again later.
            except Exception as e:
                logger.debug("could not read or store the coordinator's address: %s", e)
            await asyncio.sleep(DISCOVERY_INTERVAL_S if sealed is None else COORDINATOR_ANNOUNCE_INTERVAL_S)

    async def _announce_coordinator(self, address: str) -> None:
        """As the run's creator, sign the coordinator's address into the DHT every 150 s, so that
        joiners without --coordinator report too."""
        record = CoordinatorRecord(address=address).to_wire()
        key = coordinator_key(self.config.run.run_id)
        while True:
            try:
                await self.host.dht_store(key, record, ttl_s=COORDINATOR_RECORD_TTL_S)
            # The boundary of a background task: whatever the DHT's process raised, store again later.
            except Exception as e:
                logger.warning("could not store the coordinator's address in the DHT: %s", e)
            await asyncio.sleep(COORDINATOR_ANNOUNCE_INTERVAL_S)

    async def _store_archive_pointers(self, raw: list[bytes]) -> None:
        """Put the coordinator archive's pointers into the DHT (verified first; each at most every 15 min)."""
        now = time.time()
        for blob in raw[:ARCHIVE_POINTERS_PER_BATCH]:
            try:
                pointer = pointer_from_pb(ckpt_pb.Pointer.FromString(blob)).verify()
            except (PointerError, DecodeError) as e:
                logger.warning("the coordinator sent a bad archive pointer: %s", e)
                continue
            key = (pointer.manifest_hash, pointer.provider)
            stored = self._archive_stored.get(key, 0.0)
            if pointer.run_id != self.config.run.run_id or now - stored < ARCHIVE_RESTORE_INTERVAL_S:
                continue
            try:
                await self.host.dht_store(
                    checkpoints_key(pointer.run_id), pointer.to_wire(),
                    ttl_s=max(MIN_POINTER_TTL_S, pointer.expires_at - now),
                    subkey=f"{peer_name(pointer.provider)}/{pointer.round}",
                )  # fmt: skip
                self._archive_stored[key] = now
            # The boundary of a task of its own (the reporter's thread starts it and does not wait):
            # whatever the DHT's process raised, the coordinator sends the pointer again.
            except Exception as e:
                logger.warning("could not store the archive's pointer in the DHT: %s", e)

    def announce_checkpoint(self, manifest: Manifest, *, addrs: list[str]) -> None:
        """Tell the coordinator this node serves ``manifest`` at ``addrs`` (its archive fetches it)."""
        if self.reporter is None:
            return
        self.reporter.announce(
            coord_pb.AnnounceCheckpointRequest(
                run_id=self.config.run.run_id,
                round=manifest.round,
                global_step=manifest.global_step,
                manifest_hash=manifest.hash,
                total_bytes=manifest.total_bytes,
                provider=self.host.peer_name,
                addrs=addrs,
                manifest=manifest.to_bytes(),
            )
        )

    def report(self, outcome: RoundOutcome, contribution: Contribution, copy: GlobalCopy) -> None:
        # Only committed rounds: the coordinator keys reports by round, and a round that did not
        # commit carries its work into the next one (which reports it).
        if self.reporter is None or outcome.status is not Status.COMMITTED:
            return
        p, now = self.progress, time.time()
        elapsed, self._last_report_t = now - self._last_report_t, now
        evaluated = bool(p.history) and p.history[-1].get("eval_loss") is not None
        self.reporter.submit(
            coord_pb.RoundReport(
                round=copy.round,
                global_step=copy.global_step,
                loss=math.nan if p.last_loss is None or not math.isfinite(p.last_loss) else p.last_loss,
                samples=contribution.samples,
                samples_per_s=contribution.samples / elapsed if elapsed > 0 else 0.0,
                sent_bytes=outcome.bytes_sent,
                received_bytes=outcome.bytes_received,
                compression_ratio=outcome.compression_ratio,
                group_size=len(outcome.members),
                time=now,
                eval_loss=p.history[-1]["eval_loss"] if evaluated else math.nan,
                status=outcome.status.value,
            )
        )
