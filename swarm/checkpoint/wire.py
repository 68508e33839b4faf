"""The checkpoint protocol's wire rules: its id and bounds, ``Pointer`` <-> ``swarm.checkpoint.v1.Pointer``,
and how a client reads an answer. Pure; nodes, the light client and the coordinator's archive use it."""

from __future__ import annotations

import dataclasses

from swarm.checkpoint.manifest import MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES
from swarm.dht.pointer import Pointer, PointerError
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


POINTER_FIELDS = tuple(field.name for field in dataclasses.fields(Pointer))
"""The message carries every field of ``Pointer`` under the same name."""


def pointer_to_pb(p: Pointer) -> pb.Pointer:
    return pb.Pointer(**{name: getattr(p, name) for name in POINTER_FIELDS})


def pointer_from_pb(m: pb.Pointer) -> Pointer:
    values = {name: getattr(m, name) for name in POINTER_FIELDS}
    return Pointer(**values | {"addrs": tuple(m.addrs)})


def verified(pointers: list[pb.Pointer]) -> list[Pointer]:
    """The pointers that verify (signature, key, expiry); a peer may pass on bad ones."""
    out = []
    for m in pointers:
        try:
            out.append(pointer_from_pb(m).verify())
        except PointerError:
            continue
    return out
