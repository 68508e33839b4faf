"""A node's checkpoint service on its libp2p host: publish, answer, serve chunks, and download.

Protocol ``/swarm/checkpoint/1`` (messages in proto/swarm/checkpoint/v1): one request per stream,
answered with frames and closed by End or Error. Requests: Latest (the node reads the run's signed
pointers from the DHT and returns the valid ones), Manifest, Chunks (at most ``MAX_CHUNKS_PER_REQUEST``
per stream), Status. ``fetch_checkpoint`` is the in-node download adapter around the pure
``Downloader``: one worker per provider, every chunk verified, written in place, resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.auth import Gate
from swarm.checkpoint.artifacts import ArtifactStore, check_artifact
from swarm.checkpoint.bounds import DEFAULT_MAX_CHECKPOINT_BYTES, check_plausible
from swarm.checkpoint.download import Downloader, DownloadError
from swarm.checkpoint.fetching import OnChunk, check_complete, provider_worker
from swarm.checkpoint.manifest import (
    Chunk,
    Manifest,
    ManifestError,
    finish_partial,
    prepare_partial,
    write_chunk,
)
from swarm.checkpoint.serve import answer
from swarm.checkpoint.store import CheckpointStore
from swarm.checkpoint.wire import (
    ANSWER_TIMEOUT_S,
    CHUNKS_TIMEOUT_S,
    IDLE_WAIT_S,
    MAX_FRAME_BYTES,
    PROTOCOL,
    answer_of,
    pointer_from_pb,
)
from swarm.dht.attestation import attested
from swarm.dht.pointer import Pointer, PointerError
from swarm.dht.records import (
    MemberRecord,
    RecordError,
    RunSpec,
    checkpoints_key,
    config_key,
    members_key,
    run_name,
)
from swarm.p2p import STREAM_ERRORS, SwarmHost
from swarm.peer_names import peer_from_name, peer_name
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb
from swarm.wire.asyncio_streams import FramedStream

logger = logging.getLogger(__name__)

MAX_CHUNK_STREAMS = 16
"""Chunk requests served at once; more wait their turn (bounded by the requester's own timeout)."""
REQUEST_FRAME_BYTES = 64 * 1024
"""What a node accepts from a requester: requests are small."""
POINTER_TTL_S = 3600.0
"""Default lifetime of a node's checkpoint pointers in the DHT; ``republish`` renews them well
within it, so a node that leaves stops being named within the hour."""


async def read_pointers(
    host: SwarmHost, run_id: str, gate: Gate | None = None, *, own: Mapping[int, str] | None = None
) -> list[Pointer]:
    """The run's pointers that its members attest (``swarm.dht.attestation``), newest round first;
    bad ones are logged. ``own``: the manifest of each round whose checkpoint the reader made.

    With a closed run's ``gate``, a pointer or a heartbeat counts only if its writer holds a valid
    credential (signed into it): an outsider can publish pointers, but no member follows them."""

    def parse(raw: object) -> Pointer:
        try:
            pointer = Pointer.from_wire(raw).verify()
        except PointerError as e:
            raise RecordError(str(e)) from None
        if gate is not None and (problem := gate.problem(pointer.provider, pointer.credential)):
            raise RecordError(f"checkpoint pointer refused in closed run: {problem}")
        return pointer

    found, heartbeats = await asyncio.gather(
        host.dht_get_subkeys(checkpoints_key(run_id), parse),
        host.dht_get_subkeys(members_key(run_id), MemberRecord.from_wire),
    )
    members = {}
    for name, record in heartbeats.items():
        peer = peer_from_name(name)  # the envelope checked that the subkey names its signer
        if gate is None or gate.problem(peer, record.credential) is None:
            members[peer] = record
    claimed = [p for p in found.values() if p.run_id == run_id]
    kept = attested(claimed, members, own=own)
    if len(kept) < len(claimed):
        logger.debug(
            "%d of %d checkpoint pointers are not attested by the run's members",
            len(claimed) - len(kept),
            len(claimed),
        )
    return kept


def held_rounds(store: CheckpointStore) -> dict[int, str]:
    """The manifest of each round ``store`` holds a checkpoint of: this node's word for those rounds."""
    return {manifest.round: manifest.hash for manifest in store.manifests()}


class CheckpointService:
    """Serves what ``store`` holds; publishes signed pointers to it under the run's DHT key."""

    def __init__(
        self,
        host: SwarmHost,
        store: CheckpointStore,
        *,
        run_id: str,
        key: Ed25519PrivateKey | None,
        status: Callable[[], Awaitable[pb.StatusResponse]] | None = None,
        pointer_ttl_s: float = POINTER_TTL_S,
        gate: Gate | None = None,
        artifacts: ArtifactStore | None = None,
    ):
        self.host, self.store, self.run_id, self.key = host, store, run_id, key
        self.gate = gate
        """A closed run's rule: our pointers carry our credential; pointers we pass on are checked."""
        self._status = status
        self.pointer_ttl_s = pointer_ttl_s
        self.served_bytes = 0
        self.refused_requests = 0
        """Artifact requests refused for want of a valid credential (closed runs)."""
        self._chunk_slots = asyncio.Semaphore(MAX_CHUNK_STREAMS)
        self.artifacts = artifacts
        """The run's artifacts this node holds and serves (None: a node that serves none)."""
        self._holdings = NodeHoldings(host, store, run_id=run_id, gate=gate, artifacts=artifacts)

    async def start(self) -> None:
        await self.host.add_handler(
            PROTOCOL, self._handle, max_frame_bytes=REQUEST_FRAME_BYTES, frame_type=pb.Frame
        )

    async def publish(self, manifest: Manifest) -> Pointer | None:
        """Announce in the DHT that this node serves ``manifest`` (which the store must hold)."""
        if self.key is None:
            logger.warning(
                "no Ed25519 identity: checkpoint of round %d is served but not announced", manifest.round
            )
            return None
        pointer = Pointer(
            run_id=self.run_id,
            round=manifest.round,
            global_step=manifest.global_step,
            manifest_hash=manifest.hash,
            total_bytes=manifest.total_bytes,
            provider=self.host.peer_id,
            expires_at=time.time() + self.pointer_ttl_s,
            addrs=tuple(await self.serving_addrs()),
            credential=self.gate.own_credential if self.gate is not None else b"",
        ).signed_by(self.key)
        await self.host.dht_store(
            checkpoints_key(self.run_id),
            pointer.to_wire(),
            ttl_s=self.pointer_ttl_s,
            subkey=f"{self.host.peer_name}/{manifest.round}",
        )
        return pointer

    async def serving_addrs(self) -> list[str]:
        """Our addresses for clients: TCP ones first (the light client speaks TCP), no relays."""
        maddrs = [m.split("/p2p/")[0] for m in await self.host.visible_maddrs() if "p2p-circuit" not in m]
        return sorted(set(maddrs), key=lambda m: ("/tcp/" not in m, m))[:8]

    async def republish(self) -> None:
        """Refresh the pointers of every held checkpoint (call well within ``pointer_ttl_s``)."""
        for manifest in self.store.manifests():
            await self.publish(manifest)

    async def _handle(self, peer: bytes, stream: FramedStream) -> None:
        await answer(
            await stream.recv(),
            stream.send,
            self._holdings,
            status=self._status,
            chunk_slots=self._chunk_slots,
            on_chunk_sent=self._count_served,
            refusal=lambda digest, credential: self._refusal(peer, digest, credential),
        )

    def _refusal(self, peer: bytes, digest: str, credential: bytes) -> str | None:
        """A closed run's artifacts (its model, tokenizer and data) go only to credential holders;
        its checkpoints are refused to nobody (``swarm-node pull`` needs none)."""
        if self.gate is None or self.artifacts is None or self.artifacts.manifest(digest) is None:
            return None
        problem = self.gate.problem(peer, credential)
        if problem is None:
            return None
        self.refused_requests += 1
        return (
            f"run {self.run_id!r} is closed: its artifacts are served to credential holders only ({problem})"
        )

    def _count_served(self, size_bytes: int) -> None:
        self.served_bytes += size_bytes


class NodeHoldings:
    """A node's checkpoints as the protocol's answers read them (``swarm.checkpoint.serve.Holdings``):
    the run's pointers from the DHT, the store's manifests and chunks."""

    holder = "this node"

    def __init__(
        self,
        host: SwarmHost,
        store: CheckpointStore,
        *,
        run_id: str,
        gate: Gate | None,
        artifacts: ArtifactStore | None = None,
    ):
        self.host, self.store, self.run_id, self.gate = host, store, run_id, gate
        self.artifacts = artifacts
        """The run's artifacts this node holds (served like checkpoints, by manifest hash)."""

    async def pointers(self, run_id: str) -> list[Pointer]:
        """Of ``run_id`` (ours when empty, or when it is our run's bare name)."""
        if not run_id or run_id == run_name(self.run_id):
            run_id = self.run_id
        return await read_pointers(self.host, run_id, self.gate, own=held_rounds(self.store))

    async def spec(self, run_id: str) -> bytes:
        """The run's spec envelope from the DHT, as its creator sealed it (empty when not found)."""
        if not run_id or run_id == run_name(self.run_id):
            run_id = self.run_id
        sealed = await self.host.dht_get_sealed(config_key(run_id), RunSpec.from_wire)
        return b"" if sealed is None else msgpack.packb(sealed.value, use_bin_type=True)

    def manifest(self, digest: str) -> Manifest | None:
        found = self.store.manifest(digest)
        if found is None and self.artifacts is not None:
            found = self.artifacts.manifest(digest)
        return found

    async def chunk(self, digest: str, index: int) -> bytes | None:
        if self.store.manifest(digest) is None and self.artifacts is not None:
            return await asyncio.to_thread(self.artifacts.read_chunk, digest, index)
        return await asyncio.to_thread(self.store.read_chunk, digest, index)


# --- client side (in-node adapter) ------------------------------------------------------------


async def _request(host: SwarmHost, peer: bytes, frame: pb.Frame, *, timeout_s: float) -> FramedStream:
    stream = await host.open_stream(
        peer, PROTOCOL, timeout_s=timeout_s, max_frame_bytes=MAX_FRAME_BYTES, frame_type=pb.Frame
    )
    await stream.send(frame)
    return stream


async def _ask(host: SwarmHost, peer: bytes, frame: pb.Frame, kind: str, *, timeout_s: float) -> pb.Frame:
    """One request, one answer of ``kind``; the peer's Error is a PeerRefused (a WireError)."""
    stream = await _request(host, peer, frame, timeout_s=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            return answer_of(await stream.recv(), kind)
    finally:
        stream.close()


async def ask_latest(
    host: SwarmHost, peer: bytes, run_id: str = "", *, timeout_s: float = ANSWER_TIMEOUT_S
) -> list[Pointer]:
    request = pb.Frame(latest_request=pb.LatestRequest(run_id=run_id))
    answer = await _ask(host, peer, request, "latest_response", timeout_s=timeout_s)
    valid = []
    for m in answer.latest_response.pointers:
        try:
            valid.append(pointer_from_pb(m).verify())
        except PointerError as e:
            logger.warning("peer %s passed on a bad pointer: %s", peer_name(peer)[-8:], e)
    return valid


async def ask_status(
    host: SwarmHost, peer: bytes, *, timeout_s: float = ANSWER_TIMEOUT_S
) -> pb.StatusResponse:
    """What ``peer`` says of the run it trains (its full run id among it)."""
    answer = await _ask(
        host, peer, pb.Frame(status_request=pb.StatusRequest()), "status_response", timeout_s=timeout_s
    )
    return answer.status_response


async def fetch_manifest(
    host: SwarmHost, peer: bytes, digest: str, *, timeout_s: float = ANSWER_TIMEOUT_S, credential: bytes = b""
) -> Manifest:
    request = pb.Frame(manifest_request=pb.ManifestRequest(manifest_hash=digest, credential=credential))
    answer = await _ask(host, peer, request, "manifest_response", timeout_s=timeout_s)
    return Manifest.from_bytes(answer.manifest_response.manifest, expected_hash=digest)


async def fetch_checkpoint(
    host: SwarmHost,
    providers: Sequence[bytes],
    manifest_hash: str,
    out: Path,
    *,
    timeout_s: float = CHUNKS_TIMEOUT_S,
    on_progress: Callable[[int, int], None] | None = None,
    max_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES,
    param_count: int | None = None,
) -> Manifest:
    """Download the checkpoint ``manifest_hash`` from ``providers`` into the folder ``out``.

    Its manifest must be plausible for a model of ``param_count`` parameters (None: not known) in
    at most ``max_bytes`` (``swarm.checkpoint.bounds``), or nothing is written. Resumable: an
    interrupted download leaves ``out`` + ``.partial``, whose good chunks a later call keeps.
    ``on_progress(have_bytes, total_bytes)`` is called after every accepted chunk.
    Raises ManifestError for an implausible manifest, DownloadError when the providers cannot
    deliver it.
    """

    def plausible(manifest: Manifest) -> None:
        check_plausible(manifest, param_count=param_count, max_bytes=max_bytes)

    return await _download(
        host, providers, manifest_hash, out, check=plausible, timeout_s=timeout_s, on_progress=on_progress
    )


async def fetch_artifact(
    host: SwarmHost,
    providers: Sequence[bytes],
    manifest_hash: str,
    store: ArtifactStore,
    *,
    kind: str,
    max_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES,
    timeout_s: float = CHUNKS_TIMEOUT_S,
    on_progress: Callable[[int, int], None] | None = None,
    credential: bytes = b"",
    on_received: Callable[[int], None] | None = None,
) -> Path:
    """The folder of the run's artifact ``manifest_hash`` (of ``kind``): from ``store`` when held, else
    downloaded from ``providers`` (each chunk verified, resumable) and kept there. ManifestError for
    a manifest of another kind or over ``max_bytes``; DownloadError when no provider delivers it.
    ``credential``: this node's, in a closed run (whose members serve its artifacts to no one else);
    ``on_received(size)`` counts each chunk as it arrives (nothing for a held artifact)."""
    held = store.manifest(manifest_hash)
    if held is not None:
        check_artifact(held, kind=kind, max_bytes=max_bytes)
        return store.folder(manifest_hash)

    def wanted(manifest: Manifest) -> None:
        check_artifact(manifest, kind=kind, max_bytes=max_bytes)

    out = store.download_folder(manifest_hash)
    manifest = await _download(
        host, providers, manifest_hash, out, check=wanted, timeout_s=timeout_s, on_progress=on_progress,
        credential=credential, on_received=on_received,
    )  # fmt: skip
    return await asyncio.to_thread(store.adopt, manifest, out)


async def _download(
    host: SwarmHost,
    providers: Sequence[bytes],
    manifest_hash: str,
    out: Path,
    *,
    check: Callable[[Manifest], None],
    timeout_s: float,
    on_progress: Callable[[int, int], None] | None,
    credential: bytes = b"",
    on_received: Callable[[int], None] | None = None,
) -> Manifest:
    """The download shared by checkpoints and artifacts: the manifest from the first provider that
    sends it, ``check`` (raising ManifestError) before anything is written, then every chunk."""
    manifest: Manifest | None = None
    for peer in providers:
        try:
            manifest = await fetch_manifest(
                host, peer, manifest_hash, timeout_s=timeout_s, credential=credential
            )
            break
        except (*STREAM_ERRORS, ManifestError) as e:  # that provider failed: try the next one
            logger.warning("manifest %s… from %s: %s", manifest_hash[:12], peer_name(peer)[-8:], e)
    if manifest is None:
        raise DownloadError(f"none of {len(providers)} providers sent manifest {manifest_hash[:12]}…")
    check(manifest)
    partial = out.with_name(out.name + ".partial")
    have = await asyncio.to_thread(prepare_partial, partial, manifest)
    core = Downloader(manifest, have=have)
    for peer in providers:
        core.add_provider(peer)
    if have:
        logger.info("resuming: %d of %d chunks already on disk", len(have), len(core.chunks))
    transport = _NodeChunks(
        host, manifest_hash, partial, timeout_s=timeout_s, credential=credential, on_received=on_received
    )

    def progressed() -> None:
        if on_progress is not None:
            on_progress(core.have_bytes, manifest.total_bytes)

    def corrupt(peer: Hashable, index: int) -> None:
        logger.warning("provider %s sent a corrupt chunk %d: dropped", _short(peer), index)

    def failed(peer: Hashable, error: Exception) -> None:
        logger.warning("provider %s failed: %s", _short(peer), error)

    await asyncio.gather(
        *(
            provider_worker(
                core, peer, transport, on_accepted=progressed, on_corrupt=corrupt, on_failed=failed
            )
            for peer in providers
        )
    )
    check_complete(core)
    await asyncio.to_thread(finish_partial, partial, out)
    return manifest


class _NodeChunks:
    """The node's side of ``swarm.checkpoint.fetching``: one stream per chunk request on the node's
    host, each chunk within ``timeout_s``; chunks written on a worker thread."""

    def __init__(
        self,
        host: SwarmHost,
        manifest_hash: str,
        partial: Path,
        *,
        timeout_s: float,
        credential: bytes,
        on_received: Callable[[int], None] | None,
    ):
        self._host, self._manifest_hash, self._partial = host, manifest_hash, partial
        self._credential, self._on_received = credential, on_received
        self._timeout_s = timeout_s
        self._wake = asyncio.Event()

    async def fetch(self, provider: Hashable, indices: Sequence[int], on_chunk: OnChunk) -> None:
        assert isinstance(provider, bytes)
        request = pb.ChunksRequest(
            manifest_hash=self._manifest_hash, indices=indices, credential=self._credential
        )
        stream = await _request(
            self._host, provider, pb.Frame(chunks_request=request), timeout_s=self._timeout_s
        )
        try:
            for _ in indices:
                async with asyncio.timeout(self._timeout_s):
                    frame = answer_of(await stream.recv(), "chunk_data")
                if self._on_received is not None:
                    self._on_received(len(frame.chunk_data.data))
                if not await on_chunk(frame.chunk_data.index, frame.chunk_data.data):
                    return
        finally:
            stream.close()

    async def wait_for_news(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=IDLE_WAIT_S)

    def news(self) -> None:
        self._wake.set()

    async def write(self, chunk: Chunk, data: bytes) -> None:
        await asyncio.to_thread(write_chunk, self._partial, chunk, data)


def _short(peer: Hashable) -> str:
    return peer_name(peer)[-8:] if isinstance(peer, bytes) else str(peer)
