"""State and journal transfer: serve x' and the round journal to repairing members, and fetch them.

A member whose x' differs from the majority's (or a joiner) takes x' from a peer: either the whole
vector (``fetch_state``, verified against the provider's digest) or the rounds it missed
(``fetch_journal``, replayed by ``replay``). A request may name a round the provider is committing
right now; the provider waits for it, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import torch

from swarm.averaging.context import RoundServices, protocol_name
from swarm.averaging.host import RoundHost
from swarm.averaging.journal import JournalEntry, RoundJournal
from swarm.averaging.state import digest_of
from swarm.peer_names import short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream, WireError

logger = logging.getLogger(__name__)

STATE_CHUNK_BYTES = 1 << 20
STATE_FRAME_BYTES = STATE_CHUNK_BYTES + 4096
JOURNAL_FRAME_OVERHEAD_BYTES = 4096
"""Room for a journal part's own fields next to its payload."""
MAX_STATE_STREAMS = 2
"""State transfers served at once: each holds a copy of x'."""
STATE_TRANSFER_TIMEOUT_S = 600.0
"""Longest a state or journal transfer may take, served or fetched by default: x' of a large model
over a slow link, not a stream left hanging."""
ROUND_WAIT_DEADLINES = 4
"""A request for the round being committed waits up to this many transfer deadlines for it."""


class StateServer:
    """Serves x' and the journal on the state protocol; ``settled`` waits for the last applied round."""

    def __init__(
        self, services: RoundServices, journal: RoundJournal, settled: Callable[[], Awaitable[None]]
    ):
        self.services, self.journal, self.settled = services, journal, settled
        self._advanced = asyncio.Condition()
        self._slots = asyncio.Semaphore(MAX_STATE_STREAMS)

    async def advanced(self) -> None:
        """x' moved on (a round applied, or x' replaced): wake the requests waiting for a round."""
        async with self._advanced:
            self._advanced.notify_all()

    async def _wait_for_round(self, round_id: int) -> None:
        """A repairing member asks for the round being committed now: wait (bounded) for it."""
        s = self.services
        if round_id > s.copy.round:
            with contextlib.suppress(TimeoutError):
                async with self._advanced:
                    await asyncio.wait_for(
                        self._advanced.wait_for(lambda: s.copy.round >= round_id),
                        timeout=min(s.timing.max_transfer_s, ROUND_WAIT_DEADLINES * s.transfer.deadline_s()),
                    )

    async def handle_state(self, peer: bytes, stream: FramedStream) -> None:
        s = self.services
        frame = await asyncio.wait_for(
            stream.expect("state_request", "journal_request"), timeout=s.timing.connect_timeout_s
        )
        request = frame.state_request if frame.HasField("state_request") else frame.journal_request
        if request.run_id != s.run_id:
            await stream.send(pb.Frame(reject=pb.Reject(reason=f"this node trains run {s.run_id!r}")))
            return
        await self._wait_for_round(request.min_round)
        await self.settled()
        await s.copy.digest_async()
        if frame.HasField("journal_request"):
            await self._send_journal(frame.journal_request.after_round, stream)
            return
        if self._slots.locked():
            logger.info("state request from %s waits for a free slot", short_name(peer))
        async with self._slots, asyncio.timeout(STATE_TRANSFER_TIMEOUT_S):
            # Snapshot in one synchronous step: x' only changes on this event loop.
            copy = s.copy
            data = copy.values.numpy().tobytes()
            header = pb.StateHeader(
                round=copy.round,
                global_step=copy.global_step,
                digest=copy.digest,
                num_elements=copy.values.numel(),
                swarm_samples=copy.swarm_samples,
            )
            await stream.send(pb.Frame(state_header=header))
            for offset in range(0, len(data), STATE_CHUNK_BYTES):
                chunk = pb.StateChunk(offset=offset, data=data[offset : offset + STATE_CHUNK_BYTES])
                await stream.send(pb.Frame(state_chunk=chunk))
            await stream.send(pb.Frame(state_end=pb.StateEnd()))

    async def _send_journal(self, after_round: int, stream: FramedStream) -> None:
        # Snapshot in one synchronous step (the journal only changes on this event loop).
        journal = self.journal
        entries = journal.after(after_round)
        current = self.services.copy.round
        if entries is None or (current > after_round and (not entries or entries[-1].round != current)):
            held = f"{journal.first_round}..{journal.last_round}" if len(journal) else "none"
            await stream.send(
                pb.Frame(reject=pb.Reject(reason=f"journal holds rounds {held}, x' is at round {current}"))
            )
            return
        async with self._slots, asyncio.timeout(STATE_TRANSFER_TIMEOUT_S):
            for entry in entries:
                for shard, payload in entry.parts:
                    await stream.send(
                        pb.Frame(journal_part=pb.JournalPart(round=entry.round, shard=shard, payload=payload))
                    )
                journal_round = pb.JournalRound(
                    round=entry.round,
                    global_step_increment=entry.global_step_increment,
                    samples=entry.samples,
                    digest=entry.digest,
                )
                await stream.send(pb.Frame(journal_round=journal_round))
            await stream.send(
                pb.Frame(journal_end=pb.JournalEnd(round=entries[-1].round if entries else after_round))
            )


async def fetch_state(
    host: RoundHost,
    peer: bytes,
    *,
    run_id: str,
    num_elements: int,
    min_round: int = 0,
    connect_timeout_s: float,
    timeout_s: float,
) -> tuple[pb.StateHeader, torch.Tensor]:
    """Download x' from ``peer`` (at ``min_round`` or later if it gets there in time) and verify it."""
    stream = await host.open_stream(
        peer, protocol_name(run_id, "state"), timeout_s=connect_timeout_s, max_frame_bytes=STATE_FRAME_BYTES
    )
    try:
        async with asyncio.timeout(timeout_s):
            await stream.send(pb.Frame(state_request=pb.StateRequest(run_id=run_id, min_round=min_round)))
            frame = await stream.expect("state_header", "reject")
            if frame.WhichOneof("body") == "reject":
                raise WireError(f"peer refused the state transfer: {frame.reject.reason}")
            header = frame.state_header
            if header.num_elements != num_elements:
                raise WireError(
                    f"peer's x' has {header.num_elements} elements, this model has {num_elements}"
                )
            buffer = bytearray(num_elements * 4)
            received = 0
            while True:
                frame = await stream.expect("state_chunk", "state_end")
                if frame.WhichOneof("body") == "state_end":
                    break
                chunk = frame.state_chunk
                if chunk.offset != received or received + len(chunk.data) > len(buffer):
                    raise WireError("state chunk out of order or past the end")
                buffer[received : received + len(chunk.data)] = chunk.data
                received += len(chunk.data)
            if received != len(buffer):
                raise WireError(f"state transfer ended after {received} of {len(buffer)} bytes")
    finally:
        stream.close()
    values = torch.frombuffer(buffer, dtype=torch.float32).clone()
    if digest_of(values) != header.digest:
        raise WireError("downloaded x' does not match the digest its provider announced")
    return header, values


async def fetch_journal(
    host: RoundHost,
    peer: bytes,
    *,
    run_id: str,
    after_round: int,
    min_round: int = 0,
    num_shards: int,
    max_part_bytes: int,
    max_total_bytes: int,
    connect_timeout_s: float,
    timeout_s: float,
) -> list[JournalEntry]:
    """The rounds ``peer`` committed after ``after_round`` (checked for shape, not yet for digests).

    Raises WireError when the peer refuses (its journal does not reach back) or sends anything
    malformed: rounds out of order, shards out of range or repeated, more than ``max_total_bytes``.
    """
    stream = await host.open_stream(
        peer,
        protocol_name(run_id, "state"),
        timeout_s=connect_timeout_s,
        max_frame_bytes=max_part_bytes + JOURNAL_FRAME_OVERHEAD_BYTES,
    )
    entries: list[JournalEntry] = []
    try:
        async with asyncio.timeout(timeout_s):
            request = pb.JournalRequest(run_id=run_id, after_round=after_round, min_round=min_round)
            await stream.send(pb.Frame(journal_request=request))
            parts: list[tuple[int, bytes]] = []
            total = 0
            expected = after_round + 1
            while True:
                frame = await stream.expect("journal_part", "journal_round", "journal_end", "reject")
                kind = frame.WhichOneof("body")
                if kind == "reject":
                    raise WireError(f"peer has no journal for us: {frame.reject.reason}")
                if kind == "journal_end":
                    if parts or frame.journal_end.round != expected - 1:
                        raise WireError("journal ended in the middle of a round")
                    break
                if kind == "journal_part":
                    part = frame.journal_part
                    if part.round != expected or not 0 <= part.shard < num_shards:
                        raise WireError(
                            f"journal part for round {part.round}, shard {part.shard} is out of place"
                        )
                    if parts and part.shard <= parts[-1][0]:
                        raise WireError("journal parts are not in shard order")
                    total += len(part.payload)
                    if total > max_total_bytes:
                        raise WireError(f"journal exceeds {max_total_bytes} bytes")
                    parts.append((part.shard, bytes(part.payload)))
                    continue
                closing = frame.journal_round
                if closing.round != expected or len(closing.digest) != 32:
                    raise WireError(f"journal round {closing.round} is out of place or has a bad digest")
                entries.append(
                    JournalEntry(
                        round=closing.round,
                        global_step_increment=closing.global_step_increment,
                        samples=closing.samples,
                        parts=tuple(parts),
                        digest=bytes(closing.digest),
                    )
                )
                parts, expected = [], expected + 1
    finally:
        stream.close()
    return entries
