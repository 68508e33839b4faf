"""The server's side of ``/swarm/checkpoint/1``: one request answered, whoever serves it.

A node (``swarm.checkpoint.service``: asyncio, p2pd) and the coordinator's archive
(``coordinator.archive_host``: trio, py-libp2p) answer the same requests the same way; what differs
is what they hold (``Holdings``) and the stream they write to (``send``). ``answer`` awaits only
those, so it runs on either event loop. A request is answered with its frames and closed by End,
or by Error when the holder lacks what was asked or the request is malformed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from swarm.checkpoint.manifest import Manifest
from swarm.checkpoint.wire import MAX_CHUNKS_PER_REQUEST, pointer_to_pb
from swarm.dht.pointer import Pointer
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb


class Holdings(Protocol):
    """What one server holds, as its answers need it."""

    holder: str
    """Who the holder is, in error messages: "this node", "the archive"."""

    async def pointers(self, run_id: str) -> list[Pointer]:
        """Valid pointers of ``run_id`` (empty: the holder's own run)."""
        ...

    async def spec(self, run_id: str) -> bytes:
        """The run spec's envelope as its creator signed it, msgpack-encoded; b"" when not known."""
        ...

    def manifest(self, digest: str) -> Manifest | None: ...

    async def chunk(self, digest: str, index: int) -> bytes | None:
        """Chunk ``index`` of the manifest ``digest``; None when not held."""
        ...


async def answer(
    frame: pb.Frame,
    send: Callable[[pb.Frame], Awaitable[None]],
    holdings: Holdings,
    *,
    status: Callable[[], Awaitable[pb.StatusResponse]] | None = None,
    chunk_slots: AbstractAsyncContextManager[Any] | None = None,
    on_chunk_sent: Callable[[int], None] | None = None,
    refusal: Callable[[str, bytes], str | None] | None = None,
) -> None:
    """Answer the request ``frame``: Latest, Manifest, Chunks, or Status when ``status`` is given.

    ``chunk_slots`` is held while chunks are sent (a bound on concurrent chunk streams);
    ``on_chunk_sent(size)`` counts what was served; ``refusal(manifest_hash, credential)`` says why
    the asker may not have that manifest or its chunks (None: it may)."""
    kind = frame.WhichOneof("body")
    try:
        if kind == "latest_request":
            run_id = frame.latest_request.run_id
            pointers = await holdings.pointers(run_id)
            spec = await holdings.spec(run_id)
            await send(
                pb.Frame(
                    latest_response=pb.LatestResponse(
                        pointers=[pointer_to_pb(p) for p in pointers], spec=spec
                    )
                )
            )
        elif kind == "manifest_request":
            _check_access(refusal, frame.manifest_request.manifest_hash, frame.manifest_request.credential)
            manifest = holdings.manifest(frame.manifest_request.manifest_hash)
            if manifest is None:
                raise LookupError(f"{holdings.holder} does not hold that manifest")
            await send(pb.Frame(manifest_response=pb.ManifestResponse(manifest=manifest.to_bytes())))
        elif kind == "chunks_request":
            request = frame.chunks_request
            if len(request.indices) > MAX_CHUNKS_PER_REQUEST:
                raise ValueError(f"at most {MAX_CHUNKS_PER_REQUEST} chunks per request")
            _check_access(refusal, request.manifest_hash, request.credential)
            async with chunk_slots or contextlib.nullcontext():
                for index in request.indices:
                    data = await holdings.chunk(request.manifest_hash, index)
                    if data is None:
                        raise LookupError(f"{holdings.holder} does not hold chunk {index} of that manifest")
                    await send(pb.Frame(chunk_data=pb.ChunkData(index=index, data=data)))
                    if on_chunk_sent is not None:
                        on_chunk_sent(len(data))
        elif kind == "status_request" and status is not None:
            await send(pb.Frame(status_response=await status()))
        else:
            raise ValueError(f"unexpected request {kind}")
    except (LookupError, ValueError, PermissionError) as e:
        await send(pb.Frame(error=pb.Error(message=str(e))))
        return
    await send(pb.Frame(end=pb.End()))


def _check_access(refusal: Callable[[str, bytes], str | None] | None, digest: str, credential: bytes) -> None:
    problem = refusal(digest, credential) if refusal is not None else None
    if problem is not None:
        raise PermissionError(problem)
