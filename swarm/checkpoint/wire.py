"""The checkpoint protocol's wire rules: its id and bounds, ``Pointer`` <-> ``swarm.checkpoint.v1.Pointer``,
and how a client reads an answer. Pure; nodes, the light client and the coordinator's archive use it."""

from __future__ import annotations

from swarm.checkpoint.manifest import MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES
from swarm.checkpoint.pointer import Pointer, PointerError
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb
from swarm.wire.frames import WireError, expect_kind

PROTOCOL = "/swarm/checkpoint/1"
"""The checkpoint protocol's libp2p id: nodes, the light client and the coordinator's archive speak it."""
MAX_CHUNKS_PER_REQUEST = 64
MAX_FRAME_BYTES = MAX_CHUNK_BYTES + MAX_MANIFEST_BYTES + 4096

ANSWER_TIMEOUT_S = 30.0
"""Default bound on one question to a peer (its pointers, a manifest, its status), for the node's
client and the light client alike; ``swarm-node pull/status --timeout`` overrides it."""
CHUNKS_TIMEOUT_S = 60.0
"""Default bound on a chunk request to one provider (up to ``MAX_CHUNKS_PER_REQUEST`` chunks): a
provider slower than that is dropped and its chunks go to the others."""
IDLE_WAIT_S = 1.0
"""How long a provider's download worker with nothing to claim waits for news (a chunk delivered,
a provider dropped) before it looks again."""


class PeerRefused(WireError):
    """The peer answered a request with the protocol's Error frame (its message is ours)."""


def answer_of(frame: pb.Frame, *kinds: str) -> pb.Frame:
    """``frame`` when its body is one of ``kinds``; the peer's Error is a PeerRefused, any other
    body a WireError."""
    if frame.WhichOneof("body") == "error":
        raise PeerRefused(frame.error.message)
    return expect_kind(frame, kinds)


def pointer_to_pb(p: Pointer) -> pb.Pointer:
    return pb.Pointer(
        run_id=p.run_id,
        round=p.round,
        global_step=p.global_step,
        manifest_hash=p.manifest_hash,
        total_bytes=p.total_bytes,
        provider=p.provider,
        expires_at=p.expires_at,
        public_key=p.public_key,
        signature=p.signature,
        addrs=list(p.addrs),
        credential=p.credential,
    )


def pointer_from_pb(m: pb.Pointer) -> Pointer:
    return Pointer(
        run_id=m.run_id,
        round=m.round,
        global_step=m.global_step,
        manifest_hash=m.manifest_hash,
        total_bytes=m.total_bytes,
        provider=m.provider,
        expires_at=m.expires_at,
        addrs=tuple(m.addrs),
        public_key=m.public_key,
        signature=m.signature,
        credential=m.credential,
    )


def verified(pointers: list[pb.Pointer]) -> list[Pointer]:
    """The pointers that verify (signature, key, expiry); a peer may pass on bad ones."""
    out = []
    for m in pointers:
        try:
            out.append(pointer_from_pb(m).verify())
        except PointerError:
            continue
    return out
