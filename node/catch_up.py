"""Catch-up and repair: bring this node's x' to the swarm's, from whichever peer can send it.

Three ways, cheapest first where they apply: replay the rounds a member journaled since our round
(a few percent of x' each with a compressed codec), download the run's newest checkpoint from all
its providers (verified chunk by chunk) and replay from there, or take a live member's whole x'.
"""

from __future__ import annotations

import asyncio
import logging

import torch

from node.agreement import check_saved_spec
from node.errors import NodeError
from node.progress import Progress
from node.resume import ResumeError
from node.sections import NodeConfig
from node.trainer import LocalTrainer
from swarm.auth import Gate
from swarm.averaging.journal import JournalEntry
from swarm.averaging.outcome import ReplayError, RoundOutcome
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.averaging.transfer import fetch_journal, fetch_state
from swarm.checkpoint.download import DownloadError
from swarm.checkpoint.files import CheckpointFolderError, read_checkpoint_folder
from swarm.checkpoint.manifest import Manifest
from swarm.checkpoint.service import CheckpointService, fetch_checkpoint, held_rounds, read_pointers
from swarm.dht.attestation import attested_round
from swarm.dht.pointer import Pointer
from swarm.dht.records import MemberRecord, RunSpec
from swarm.metrics import NodeMetrics
from swarm.p2p import PEER_ERRORS, SwarmHost
from swarm.peer_names import peer_name

logger = logging.getLogger("swarm.node")

TRANSFER_CONNECT_TIMEOUT_S = 5.0
"""Limit for opening a stream to a peer for its x' or its journal; a peer slower than that to answer
is skipped for the next one."""
TRANSFER_TIMEOUT_S = 600.0
"""Limit for a whole transfer of x' or of a journal: a large model over a slow link."""
DIAL_TIMEOUT_S = 5.0
"""Limit for dialling one checkpoint provider at the addresses its pointer names."""
CHECKPOINT_ERRORS: tuple[type[Exception], ...] = (
    *PEER_ERRORS,
    DownloadError,
    ResumeError,
    KeyError,
    TypeError,
)
"""What starting from a swarm checkpoint raises when no provider delivers it or what they delivered is
not this run's: a failed download, a manifest that cannot be this model's checkpoint or is over the
cap (ManifestError, a ValueError of PEER_ERRORS), a spec of other settings, a swarm.json missing
keys (KeyError) or naming fields a RunSpec does not have (TypeError)."""


SOURCE_LEAD = 2
"""A member whose heartbeat is up to this many rounds past the attested round is still asked (after
those within it): heartbeats lag their rounds by seconds, and with two members the lower median is
the lagging one, which may be a member that has just died."""


def attested_sources(members: dict[bytes, MemberRecord]) -> list[bytes]:
    """Whom to take x' or a journal from: members whose heartbeat claims at most the round a
    majority of members reached (``swarm.dht.attestation``), most advanced first, then those at
    most ``SOURCE_LEAD`` rounds past it. A stranger claiming round 10^9 would otherwise be asked
    first; it is never asked."""
    bound = attested_round(members)
    if bound is None:
        return sorted(members, key=lambda peer: -members[peer].round)
    within = [peer for peer, record in members.items() if record.round <= bound]
    ahead = [peer for peer, record in members.items() if bound < record.round <= bound + SOURCE_LEAD]
    return sorted(within, key=lambda peer: -members[peer].round) + sorted(
        ahead, key=lambda p: members[p].round
    )


class CatchUp:
    """Brings x' (and x_i with it) to the swarm's: at start (a joiner, a resumed node), and after a
    round this node could not commit while the others did (a repair)."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        host: SwarmHost,
        averager: Averager,
        copy: GlobalCopy,
        trainer: LocalTrainer,
        spec: RunSpec,
        checkpoints: CheckpointService,
        gate: Gate,
        progress: Progress,
        metrics: NodeMetrics,
    ) -> None:
        self.run_id = config.run.run_id
        self.max_checkpoint_bytes = config.checkpoints.max_bytes
        self.host = host
        self.averager = averager
        self.copy = copy
        self.trainer = trainer
        self.spec = spec
        self.checkpoints = checkpoints
        self.gate = gate
        self.progress = progress
        self.metrics = metrics

    async def catch_up(self, *, keep_local_work: bool = False) -> None:
        """A joiner first takes x' (and its round and step) from the swarm: the newest checkpoint,
        downloaded from all its providers, then the rounds since replayed from a member's journal;
        failing that (no checkpoint, or no journal reaching back to it), x' from the most advanced
        live member. A resumed node replays or downloads what it missed and keeps its unsent work
        (x_i - x'): x_i moves by as much as x' does.
        """
        averager, copy, trainer = self.averager, self.copy, self.trainer
        members = {p: r for p, r in (await averager.live_members()).items() if not r.leaving}
        members.pop(self.host.peer_id, None)
        # Whatever x' this node takes, its source may commit another round before we first meet it:
        # until our first committed round we are a newcomer (we gather at an established member,
        # and if we are behind it, we repair rather than outvote it).
        averager.fresh = bool(members)
        ranked = attested_sources(members)
        if keep_local_work:
            ahead = [p for p in ranked if members[p].round > copy.round]
            old = copy.values.clone()
            if ahead and (
                await self.replay_from_any(ahead) is not None or await self.fetch_from_any(ahead) is not None
            ):
                trainer.adopt_global_change(old, copy.values)
            return
        catch_up = self.progress.catch_up
        if (
            members
            and all(r.round == 0 for r in members.values())
            and copy.digest.hex() == self.spec.initial_digest
        ):
            # The heartbeats say no round yet, but they may be seconds old (a member alone can commit
            # rounds meanwhile, and a fresh pair trusting a stale "round 0" would then outvote it at
            # the next rendezvous): ask the members' journals what was committed since.
            replayed = await self.replay_from_any(ranked)
            if replayed is not None and not replayed[1]:
                logger.info(
                    "the run has committed no round yet and this node holds its initial x': no download"
                )
                return
            if replayed is not None:
                self._caught_up_by_replay(replayed, source="journal", start="")
                return
        checkpoint = await self._load_swarm_checkpoint() if ranked else None
        if checkpoint is not None:
            replayed = await self.replay_from_any(ranked)
            if replayed is not None:
                _, entries = replayed
                if entries:  # the journal's digests vouch for the checkpoint: serve it too
                    await self.checkpoints.publish(checkpoint)
                start = f"checkpoint of round {catch_up['checkpoint_round']}, then "
                self._caught_up_by_replay(replayed, source="checkpoint+journal", start=start)
                return
            logger.info("no member's journal reaches back to the checkpoint: taking x' from a member")
        if await self.fetch_from_any(ranked) is not None:
            trainer.load_flat(copy.values)
            catch_up.update(source="state transfer", round=copy.round)
            return
        if members:
            raise NodeError("no live member of the run could send its x'; try again in a moment")
        logger.warning("no live member to catch up from: starting from the run's initial weights")

    async def repair(self, outcome: RoundOutcome) -> bool:
        """Bring x' to the round ``outcome`` names (or later); whether it did."""
        # The providers are committing this very round: ask for its result, not the copy before it.
        # A member that only fell behind replays the rounds it missed (a few percent of x' each with
        # a compressed codec); one whose x' went wrong, or is too far behind, downloads x'.
        copy = self.copy
        old = copy.values.clone()
        replayed = await self.replay_from_any(outcome.repair_from, min_round=outcome.round)
        if replayed is not None:
            logger.info("round %d: replayed %d missed rounds from %s", outcome.round, len(replayed[1]),
                        peer_name(replayed[0])[-8:])  # fmt: skip
        elif await self.fetch_from_any(outcome.repair_from, min_round=outcome.round) is None:
            logger.warning(
                "round %d: could not repair x' from any of %d peers", outcome.round, len(outcome.repair_from)
            )
            return False
        self.trainer.adopt_global_change(old, copy.values)
        self.progress.repairs += 1
        self.metrics.repairs.inc()
        return True

    async def fetch_from_any(
        self, peers: list[bytes], *, min_round: int = 0
    ) -> tuple[bytes, torch.Tensor] | None:
        """Replace x' (and its counters) with the first peer's copy that downloads and verifies.

        Returns the peer and our previous x', or None when no peer could send its copy.
        """
        copy = self.copy
        for peer in peers:
            try:
                header, values = await fetch_state(
                    self.host,
                    peer,
                    run_id=self.run_id,
                    num_elements=copy.values.numel(),
                    min_round=min_round,
                    connect_timeout_s=TRANSFER_CONNECT_TIMEOUT_S,
                    timeout_s=TRANSFER_TIMEOUT_S,
                )
            except PEER_ERRORS as e:
                logger.warning("could not fetch x' from %s: %s", peer_name(peer)[-8:], e)
                continue
            old = copy.values.clone()
            copy.replace(
                values, round=header.round, global_step=header.global_step, swarm_samples=header.swarm_samples
            )
            self.averager.journal.clear()  # its rounds no longer lead to this x'
            logger.info(
                "took x' from %s: round %d, global step %d",
                peer_name(peer)[-8:],
                header.round,
                header.global_step,
            )
            return peer, old
        return None

    async def replay_from_any(
        self, peers: list[bytes], *, min_round: int = 0
    ) -> tuple[bytes, list[JournalEntry]] | None:
        """Bring x' forward by replaying the rounds a peer journaled since our round (first peer
        that can), checking x's digest after every round. Returns the peer and the rounds replayed,
        or None when no peer could (its journal does not reach back, or it does not replay)."""
        averager, copy = self.averager, self.copy
        for peer in peers:
            try:
                entries = await fetch_journal(
                    self.host, peer, run_id=self.run_id, after_round=copy.round,
                    min_round=min_round, num_shards=averager.layout.num_shards,
                    max_part_bytes=averager.shard_frame_bytes, max_total_bytes=averager.journal.max_bytes,
                    connect_timeout_s=TRANSFER_CONNECT_TIMEOUT_S, timeout_s=TRANSFER_TIMEOUT_S,
                )  # fmt: skip
                if copy.round + len(entries) < min_round:
                    raise ReplayError(f"its journal ends before round {min_round}")
                scratch = GlobalCopy(
                    copy.values.clone(), round=copy.round, global_step=copy.global_step,
                    swarm_samples=copy.swarm_samples,
                )  # fmt: skip
                await asyncio.to_thread(averager.replay, entries, scratch)
            except PEER_ERRORS as e:  # refused, gone, malformed, or it does not lead to the digests
                logger.info("could not replay rounds from %s: %s", peer_name(peer)[-8:], e)
                continue
            copy.replace(
                scratch.values, round=scratch.round, global_step=scratch.global_step,
                swarm_samples=scratch.swarm_samples,
            )  # fmt: skip
            for entry in entries:  # the same rounds now lead to our x': we can serve them too
                averager.journal.append(entry)
            return peer, entries
        return None

    def _caught_up_by_replay(
        self, replayed: tuple[bytes, list[JournalEntry]], *, source: str, start: str
    ) -> None:
        """A joiner's x' was brought forward by a member's journal: train from it and report how."""
        peer, entries = replayed
        copy = self.copy
        self.trainer.load_flat(copy.values)
        self.progress.catch_up.update(
            source=source, replayed_rounds=len(entries), round=copy.round,
            journal_bytes=sum(e.size for e in entries),
        )  # fmt: skip
        logger.info(
            "caught up: %s%d rounds replayed from %s's journal: round %d",
            start, len(entries), peer_name(peer)[-8:], copy.round,
        )  # fmt: skip

    async def _dial(self, pointers: list[Pointer]) -> None:
        """Dial providers at the addresses their pointers name, all at once (a few seconds at most):
        the coordinator's archive, for one, is no hivemind peer that p2pd could look up."""
        host = self.host

        async def dial(pointer: Pointer) -> None:
            try:
                await host.connect(pointer.provider, pointer.addrs, timeout_s=DIAL_TIMEOUT_S)
            except PEER_ERRORS as e:  # a provider that left: the download goes on without it
                logger.info("could not dial provider %s: %s", peer_name(pointer.provider)[-8:], e)

        await asyncio.gather(*(dial(p) for p in pointers))

    async def _load_swarm_checkpoint(self) -> Manifest | None:
        """Download the run's newest checkpoint from every provider that announced it (verified
        chunk by chunk, resumable) into this node's store, and take x' from it. None if none."""
        copy = self.copy
        found = await read_pointers(
            self.host, self.run_id, self.gate, own=held_rounds(self.checkpoints.store)
        )
        pointers = [p for p in found if p.round > copy.round]
        if not pointers:
            return None
        newest = pointers[0]
        providers = sorted({p.provider for p in pointers if p.manifest_hash == newest.manifest_hash})
        await self._dial([p for p in pointers if p.manifest_hash == newest.manifest_hash and p.addrs])
        store = self.checkpoints.store
        manifest = store.manifest(newest.manifest_hash)
        try:
            if manifest is None:
                folder = store.download_folder(newest.manifest_hash)
                logger.info(
                    "downloading the checkpoint of round %d (%.1f MB) from %d provider(s)",
                    newest.round, newest.total_bytes / 1e6, len(providers),
                )  # fmt: skip
                shown = [0]

                def progress(have: int, total: int) -> None:
                    tenth = 10 * have // max(1, total)
                    if tenth > shown[0]:
                        shown[0] = tenth
                        logger.info("checkpoint download: %d%% of %.1f MB", 10 * tenth, total / 1e6)

                # The manifest must fit this node's model (which the run's spec names: its x' has
                # that many values) and the user's cap, or nothing is downloaded.
                manifest = await fetch_checkpoint(
                    self.host, providers, newest.manifest_hash, folder, on_progress=progress,
                    max_bytes=self.max_checkpoint_bytes, param_count=copy.values.numel(),
                )  # fmt: skip
                await asyncio.to_thread(store.adopt, manifest, folder)
            values, info = await asyncio.to_thread(
                read_checkpoint_folder, store.folder(manifest.hash), self.trainer.model
            )
            if info.get("run_id") != self.run_id or info.get("round") != manifest.round:
                raise CheckpointFolderError("its swarm.json names another run or round than its manifest")
            check_saved_spec(info["spec"], self.spec, store.folder(manifest.hash))
        except CHECKPOINT_ERRORS as e:  # no provider delivered, or what they delivered is not this run's
            logger.warning("could not start from the checkpoint of round %d: %s", newest.round, e)
            return None
        copy.replace(
            values, round=info["round"], global_step=info["global_step"], swarm_samples=info["swarm_samples"]
        )
        self.averager.journal.clear()
        self.progress.catch_up.update(
            checkpoint_round=manifest.round, checkpoint_bytes=manifest.total_bytes, checkpoint_manifest=manifest.hash,
            providers=len(providers), provider_names=[peer_name(p) for p in providers],
        )  # fmt: skip
        return manifest
