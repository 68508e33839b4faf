"""The light client: ``swarm-node pull`` and ``swarm-node status`` over py-libp2p, without torch or hivemind.

It dials the peer it was given (TCP, Noise, yamux or mplex, as the nodes' p2pd daemons speak), asks
it for the run's checkpoints (the node reads the signed pointers from the DHT; every pointer is
verified again here), fetches the manifest, refuses it unless it is plausible (within the user's
cap, the checkpoint's files, no repeated chunks: ``swarm.checkpoint.bounds``) before anything is
written, and downloads the chunks from every provider named by the pointers in parallel through
the shared downloader core (``swarm.checkpoint.download``): every chunk hash checked, a corrupt
provider dropped, a departed one's chunks re-assigned, an interrupted pull resumed from
``<out>.partial``.

Runs under trio (py-libp2p's event loop). Imports: py-libp2p, protobuf, cryptography, the pure
checkpoint modules. ``tests/unit/test_light_imports.py`` guards that torch and hivemind stay out.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from swarm.checkpoint.bounds import DEFAULT_MAX_CHECKPOINT_BYTES, check_plausible
from swarm.checkpoint.download import Downloader, DownloadError
from swarm.checkpoint.fetching import OnChunk, check_complete, provider_worker
from swarm.checkpoint.manifest import (
    Chunk,
    Manifest,
    ManifestError,
    finish_partial,
    prepare_partial,
    replaceable,
    write_chunk,
)
from swarm.checkpoint.wire import (
    ANSWER_TIMEOUT_S,
    CHUNKS_TIMEOUT_S,
    IDLE_WAIT_S,
    MAX_FRAME_BYTES,
    PROTOCOL,
    PeerRefused,
    answer_of,
    verified,
)
from swarm.dht.pointer import Pointer
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb
from swarm.wire.frames import WireError
from swarm.wire.trio_streams import TrioFramedStream

logger = logging.getLogger("swarm.light")


class LightError(RuntimeError):
    """What the user sees as one line: the peer is unreachable, no checkpoint exists, and so on."""


# --- results ------------------------------------------------------------------------------------


@dataclass
class PullResult:
    manifest: Manifest
    folder: Path
    providers: int
    resumed_bytes: int
    bad_providers: int
    transfer_s: float = 0.0
    """Seconds from the first chunk request to the last chunk written (dial and lookup excluded)."""


def spec_param_count(raw: bytes, run_id: str) -> int | None:
    """The parameter count in a run spec envelope a node passed on, once its signature verifies as
    the run's creator's (the run id's pin); None when there is none or it does not verify (the
    download is then bounded by the cap alone)."""
    if not raw:
        return None
    from swarm.dht.envelope import key_id, open_envelope
    from swarm.dht.records import RunSpec, config_key

    try:
        envelope = open_envelope(
            key=key_id(config_key(run_id)), subkey=None, value=msgpack.unpackb(raw, raw=False),
            expiration_time=0.0, now=time.time(),
        )  # fmt: skip
        return RunSpec.from_wire(envelope.payload).param_count
    # Whatever the peer's bytes make the decoders raise, the spec is ignored, never the pull.
    except Exception as e:
        logger.info("ignoring the run spec the peer sent: %s", e)
        return None


def choose(pointers: list[Pointer], *, round: int | None) -> list[Pointer]:
    """The pointers of the newest checkpoint (or of ``round``), one per provider."""
    if round is not None:
        pointers = [p for p in pointers if p.round == round]
    if not pointers:
        raise LightError(
            "the swarm holds no checkpoint" + (f" of round {round}" if round is not None else "")
        )
    newest = max(pointers, key=lambda p: p.round)
    # Members at one round share one manifest; should two differ (they must not), take the most served.
    by_hash: dict[str, list[Pointer]] = {}
    for p in pointers:
        if p.round == newest.round:
            by_hash.setdefault(p.manifest_hash, []).append(p)
    best = max(by_hash.values(), key=len)
    return list({p.provider: p for p in best}.values())


# --- the transfer loop, written against two small callables so tests can drive it too ---------

Request = Callable[[Any, pb.Frame], Any]
"""``await request(provider, frame)`` -> an open TrioFramedStream with the request sent."""


class _TrioChunks:
    """The light client's side of ``swarm.checkpoint.fetching``: one stream per chunk request, all
    of it within ``CHUNKS_TIMEOUT_S``; chunks written as they arrive."""

    def __init__(self, manifest_hash: str, request: Request, partial: Path):
        import trio

        self._manifest_hash, self._request, self._partial = manifest_hash, request, partial
        self._progress = trio.Event()

    async def fetch(self, provider: Any, indices: Sequence[int], on_chunk: OnChunk) -> None:
        import trio

        frame = pb.Frame(chunks_request=pb.ChunksRequest(manifest_hash=self._manifest_hash, indices=indices))
        with trio.fail_after(CHUNKS_TIMEOUT_S):
            stream = await self._request(provider, frame)
            try:
                for _ in indices:
                    answer = answer_of(await stream.recv(), "chunk_data")
                    if not await on_chunk(answer.chunk_data.index, answer.chunk_data.data):
                        return
            finally:
                await stream.close()

    async def wait_for_news(self) -> None:
        import trio

        with trio.move_on_after(IDLE_WAIT_S):
            await self._progress.wait()

    def news(self) -> None:
        import trio

        self._progress.set()
        self._progress = trio.Event()

    async def write(self, chunk: Chunk, data: bytes) -> None:
        write_chunk(self._partial, chunk, data)


async def download(
    manifest: Manifest,
    providers: list[Any],
    request: Request,
    out: Path,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> PullResult:
    import trio

    partial = out.with_name(out.name + ".partial")
    have = prepare_partial(partial, manifest)
    core = Downloader(manifest, have=have)
    resumed = core.have_bytes
    for provider in providers:
        core.add_provider(provider)

    def progressed() -> None:
        if on_progress is not None:
            on_progress(core.have_bytes, manifest.total_bytes)

    progressed()
    transport = _TrioChunks(manifest.hash, request, partial)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for provider in providers:
            nursery.start_soon(
                functools.partial(provider_worker, core, provider, transport, on_accepted=progressed)
            )
    check_complete(core)
    transfer_s = time.monotonic() - started
    finish_partial(partial, out)
    return PullResult(
        manifest=manifest,
        folder=out,
        providers=len(providers),
        resumed_bytes=resumed,
        bad_providers=len(core.bad_providers),
        transfer_s=transfer_s,
    )


# --- py-libp2p transport ----------------------------------------------------------------------


class _Session:
    """One py-libp2p host (fresh Ed25519 key, Noise only) for the duration of a command."""

    def __init__(self, host: Any):
        self.host = host

    async def request(self, peer_info: Any, frame: pb.Frame) -> TrioFramedStream:
        from libp2p.custom_types import TProtocol

        await self.host.connect(peer_info)
        stream = await self.host.new_stream(peer_info.peer_id, [TProtocol(PROTOCOL)])
        framed = TrioFramedStream(stream, frame_type=pb.Frame, max_frame_bytes=MAX_FRAME_BYTES)
        await framed.send(frame)
        return framed


def _new_host() -> Any:
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_pair
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    # py-libp2p logs every failed dial attempt as an error; the client reports the outcome once.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_pair().private_key)
    return new_host(key_pair=key_pair, sec_opt={NOISE_PROTOCOL_ID: noise})


def _peer_info(maddr: str) -> Any:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(maddr))
    except (ValueError, multiaddr.exceptions.Error) as e:
        raise LightError(f"{maddr!r} is not a peer multiaddr with /p2p/<peer id> ({e})") from None


def _provider_info(pointer: Pointer) -> Any:
    import multiaddr
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo

    addrs = [multiaddr.Multiaddr(a) for a in pointer.addrs if "/tcp/" in a and "/quic" not in a]
    return PeerInfo(ID(pointer.provider), addrs)


async def _ask(session: _Session, info: Any, frame: pb.Frame, kind: str, timeout_s: float) -> pb.Frame:
    import trio

    try:
        with trio.fail_after(timeout_s):
            stream = await session.request(info, frame)
            try:
                return answer_of(await stream.recv(), kind)
            finally:
                await stream.close()
    except trio.TooSlowError:
        raise LightError(f"the peer did not answer within {timeout_s:.0f} s") from None
    except PeerRefused as e:
        raise LightError(f"the peer answered: {e}") from None
    except WireError as e:
        raise LightError(f"bad answer from the peer: {e}") from None
    # The boundary of the user's command: py-libp2p's dial fails in many types (no route, refused,
    # Noise, multistream); the user gets it as one line, not a traceback.
    except Exception as e:
        raise LightError(f"could not reach the peer: {e}") from None


async def _pull(
    peer: str,
    *,
    run_id: str,
    round: int | None,
    out: Path,
    timeout_s: float,
    on_manifest: Callable[[Manifest, list[Pointer]], None] | None,
    on_progress: Callable[[int, int], None] | None,
    force: bool,
    max_bytes: int,
    param_count: int | None,
) -> PullResult:
    if not force and not replaceable(out):
        raise LightError(
            f"{out} holds files that are not a checkpoint pulled before: pull into a new or empty folder,"
            " or pass --force to replace what it holds"
        )
    session = _Session(_new_host())
    async with session.host.run(listen_addrs=[]):
        entry = _peer_info(peer)
        answer = await _ask(
            session,
            entry,
            pb.Frame(latest_request=pb.LatestRequest(run_id=run_id)),
            "latest_response",
            timeout_s,
        )
        pointers = choose(verified(list(answer.latest_response.pointers)), round=round)
        if param_count is None:
            param_count = spec_param_count(answer.latest_response.spec, pointers[0].run_id)
        infos = {p.provider: _provider_info(p) for p in pointers}
        infos[entry.peer_id.to_bytes()] = entry  # the peer we know by address is dialled by that address
        manifest_hash = pointers[0].manifest_hash
        manifest: Manifest | None = None
        errors: list[str] = []
        for p in pointers:
            try:
                raw = await _ask(
                    session, infos[p.provider], pb.Frame(manifest_request=pb.ManifestRequest(manifest_hash=manifest_hash)),
                    "manifest_response", timeout_s,
                )  # fmt: skip
                manifest = Manifest.from_bytes(raw.manifest_response.manifest, expected_hash=manifest_hash)
                break
            except (LightError, ValueError) as e:
                errors.append(str(e))
        if manifest is None:
            raise LightError(f"no provider sent the manifest: {'; '.join(errors)}")
        try:
            check_plausible(manifest, param_count=param_count, max_bytes=max_bytes)
        except ManifestError as e:
            raise LightError(f"refused the checkpoint of round {manifest.round}: {e}") from None
        if on_manifest is not None:
            on_manifest(manifest, pointers)

        async def request(provider: bytes, frame: pb.Frame) -> TrioFramedStream:
            return await session.request(infos[provider], frame)

        try:
            return await download(
                manifest, [p.provider for p in pointers], request, out, on_progress=on_progress
            )
        except DownloadError as e:
            raise LightError(str(e)) from None


def pull(
    peer: str,
    out: Path,
    *,
    run_id: str = "",
    round: int | None = None,
    timeout_s: float = ANSWER_TIMEOUT_S,
    on_manifest: Callable[[Manifest, list[Pointer]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    max_bytes: int = DEFAULT_MAX_CHECKPOINT_BYTES,
    param_count: int | None = None,
) -> PullResult:
    """Download the newest checkpoint (or that of ``round``) of the run ``peer`` trains (or ``run_id``)
    into ``out``, which must be new, empty or a checkpoint pulled before (unless ``force``).

    Its manifest is refused (LightError) unless plausible for a model of ``param_count`` parameters
    in at most ``max_bytes`` (``swarm.checkpoint.bounds``), before anything is written. Without
    ``param_count``, the count is the one in the run spec the peer passes on, signed by the run's
    creator (``spec_param_count``); a peer that sends none leaves the cap and the structural rules."""
    return _trio_run(
        lambda: _pull(
            peer,
            run_id=run_id,
            round=round,
            out=out,
            timeout_s=timeout_s,
            on_manifest=on_manifest,
            on_progress=on_progress,
            force=force,
            max_bytes=max_bytes,
            param_count=param_count,
        )
    )


def status(peer: str, *, timeout_s: float = ANSWER_TIMEOUT_S) -> pb.StatusResponse:
    async def go() -> pb.StatusResponse:
        session = _Session(_new_host())
        async with session.host.run(listen_addrs=[]):
            answer = await _ask(
                session,
                _peer_info(peer),
                pb.Frame(status_request=pb.StatusRequest()),
                "status_response",
                timeout_s,
            )
            return answer.status_response

    return _trio_run(go)


def _find(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    for error in group.exceptions:
        if isinstance(error, kind):
            return error
        if isinstance(error, BaseExceptionGroup) and (inner := _find(error, kind)) is not None:
            return inner
    return None


def _trio_run(fn: Callable[[], Any]) -> Any:
    """trio.run, with our one-line errors taken out of the exception groups py-libp2p's nurseries make."""
    import trio

    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        for kind in (LightError, KeyboardInterrupt):
            found = _find(group, kind)
            if found is not None:
                raise found from None
        raise
