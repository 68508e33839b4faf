"""Fuzz targets: every decoder that reads bytes a peer sent, fed arbitrary bytes.

Each target takes ``data: bytes``; the decoder must either succeed or raise its own error type
(which the target catches); anything else (IndexError, struct.error, a crash) is a bug. What a decoder
accepts must also be sane: decoded tensors have the declared size and finite values.

Used by the hypothesis tests next to this file (bounded, in CI) and by ``benchmarks/fuzz.py``
(atheris, coverage-guided, for minutes per target).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct

import msgpack
import torch

from swarm.auth import Credential, CredentialError, Revocations
from swarm.checkpoint.manifest import Manifest, ManifestError, build_manifest
from swarm.checkpoint.wire import pointer_from_pb
from swarm.compression.cocktail import CocktailCodec, CocktailParams
from swarm.compression.codecs import CodecContext, CodecError, Fp16Codec, Fp32Codec
from swarm.dht.envelope import EnvelopeError, key_id, open_envelope, seal
from swarm.dht.pointer import Pointer, PointerError
from swarm.dht.records import CoordinatorRecord, MemberRecord, RecordError, RunSpec, record_key
from swarm.proto.swarm.averaging.v1 import averaging_pb2
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2
from swarm.wire.asyncio_streams import FramedStream
from swarm.wire.frames import WireError

_CODECS = {
    2: CocktailCodec(CocktailParams(bits=2)),
    4: CocktailCodec(CocktailParams(bits=4)),
    8: CocktailCodec(CocktailParams(bits=8)),
}


def _check_decoded(values: torch.Tensor, n: int) -> None:
    assert values.shape == (n,) and values.dtype == torch.float32, (values.shape, values.dtype)
    assert bool(torch.isfinite(values).all()), "a decoder accepted a payload with non-finite values"


def cocktail_payload(data: bytes) -> None:
    """A valid payload for a shard chosen by the first bytes, then overwritten by the rest."""
    if len(data) < 4:
        return
    bits = (2, 4, 8)[data[0] % 3]
    n = 1 + int.from_bytes(data[1:3], "little") % 3000
    ctx = CodecContext(round=data[3], shard=data[3] % 7)
    codec = _CODECS[bits]
    body = data[4:]
    generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(data[:4]).digest()[:4], "little"))
    payload = bytearray(codec.encode(torch.randn(n, generator=generator), ctx))
    # Mutations: the fuzzer's bytes overwrite the payload at positions they name, or replace it.
    if body and body[0] % 4 == 0:
        payload = bytearray(body[1:])
    else:
        for i in range(0, len(body) - 2, 3):
            position = int.from_bytes(body[i : i + 2], "little") % max(1, len(payload))
            payload[position] = body[i + 2]
        if body and body[0] % 4 == 1:
            del payload[len(payload) // 2 :]
    try:
        values = codec.decode(bytes(payload), n, ctx)
    except CodecError:
        return
    _check_decoded(values, n)


def dense_payload(data: bytes) -> None:
    """fp32 and fp16 payloads of any length and content."""
    if not data:
        return
    n = data[0] + 1
    for codec in (Fp32Codec(), Fp16Codec()):
        try:
            values = codec.decode(data[1:], n, CodecContext(round=0, shard=0))
        except CodecError:
            continue
        _check_decoded(values, n)


def _read_frames(data: bytes, frame_type: type, limit: int) -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        stream = FramedStream(reader, None, max_frame_bytes=limit, frame_type=frame_type)  # type: ignore[arg-type]
        for _ in range(64):
            try:
                frame = await stream.recv()
            except WireError:
                return
            assert frame.WhichOneof("body") is not None

    asyncio.run(go())


def averaging_frames(data: bytes) -> None:
    """A stream of length-prefixed averaging frames (rendezvous, shard, state, journal)."""
    _read_frames(data, averaging_pb2.Frame, 1 << 16)


def checkpoint_frames(data: bytes) -> None:
    """A stream of length-prefixed checkpoint-protocol frames, and pointers inside them."""
    _read_frames(data, checkpoint_pb2.Frame, 1 << 16)
    message = checkpoint_pb2.Pointer()
    try:
        message.ParseFromString(data)
    except Exception:  # protobuf's DecodeError: what every caller catches as a malformed frame
        return
    try:
        pointer_from_pb(message).verify()
    except PointerError:
        return


def dht_record(data: bytes) -> None:
    """A DHT value (msgpack, as hivemind stores it) read as every record kind."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError):
        return  # what hivemind's deserialisation rejects never reaches a parser
    for parse in (RunSpec.from_wire, MemberRecord.from_wire, CoordinatorRecord.from_wire):
        try:
            parse(raw)
        except RecordError:
            pass
    try:
        Pointer.from_wire(raw).verify()
    except PointerError:
        pass
    for family, subkey in (
        ("members", "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"),
        ("config", None),
    ):
        try:  # what every node's DHT validator runs on it
            open_envelope(
                key=key_id(record_key("fuzz", family)), subkey=subkey, value=raw, expiration_time=0.0, now=0.0
            )
        except EnvelopeError:
            pass


_VALID_MANIFEST = build_manifest(
    run_id="fuzz", round=3, global_step=30, files={"model.safetensors": bytes(range(256)) * 40, "swarm.json": b"{}"},
    chunk_size=4096,
)  # fmt: skip


def credential(data: bytes) -> None:
    """Closed-run credentials and revocation lists, as a peer or a file may present them."""
    try:
        parsed = Credential.from_bytes(data)
        parsed.verify(owner_key="00" * 32, run_id="fuzz", peer_id=b"p")
    except CredentialError:
        pass
    try:
        Revocations.from_bytes(data, owner_key="11" * 32, run_id="fuzz")
    except CredentialError:
        pass


def manifest(data: bytes) -> None:
    """Manifest bytes: arbitrary, or a valid manifest with bytes overwritten."""
    raw = bytearray(_VALID_MANIFEST.to_bytes())
    if data and data[0] % 2:
        raw = bytearray(data[1:])
    else:
        for i in range(1, len(data) - 2, 3):
            raw[int.from_bytes(data[i : i + 2], "little") % len(raw)] = data[i + 2]
    try:
        parsed = Manifest.from_bytes(bytes(raw))
    except ManifestError:
        return
    chunks = parsed.chunks()
    assert parsed.total_bytes == sum(c.size for c in chunks)
    assert all(len(c.sha256) == 64 and 0 < c.size <= parsed.chunk_size for c in chunks)


TARGETS = {
    "cocktail_payload": cocktail_payload,
    "dense_payload": dense_payload,
    "averaging_frames": averaging_frames,
    "checkpoint_frames": checkpoint_frames,
    "dht_record": dht_record,
    "manifest": manifest,
    "credential": credential,
}


def length_prefixed(*frames: bytes) -> bytes:
    """Helper for seeds: frames with their 4-byte big-endian length prefixes."""
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs per target: coverage-guided runs start from them (random bytes rarely parse as
    JSON, msgpack or a framed protobuf)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from swarm.auth import issue, revoke
    from swarm.dht.records import MemberRecord

    owner = Ed25519PrivateKey.generate()
    join = averaging_pb2.Frame(join=averaging_pb2.JoinRequest(run_id="r", digest=b"d" * 32, weight=1.0))
    part = averaging_pb2.Frame(part=averaging_pb2.ShardPart(group_id=b"g", shard=1, weight=1.0, payload=b"x"))
    latest = checkpoint_pb2.Frame(latest_request=checkpoint_pb2.LatestRequest(run_id="r"))
    member = MemberRecord(round=3, global_step=9, local_steps_per_round=2.0, credential=b"{}")
    return {
        "cocktail_payload": [bytes([1, 200, 3, 5]) + bytes(12), bytes([2, 17, 0, 9, 1]) + b"CK" + bytes(20)],
        "dense_payload": [bytes([3]) + bytes(16), bytes([1]) + bytes(4)],
        "averaging_frames": [length_prefixed(join.SerializeToString(), part.SerializeToString())],
        "checkpoint_frames": [length_prefixed(latest.SerializeToString())],
        "dht_record": [
            msgpack.packb(member.to_wire()),
            msgpack.packb({"v": 1, "address": "h:1"}),
            msgpack.packb(
                seal(owner, key=record_key("fuzz", "config"), subkey=None, payload={"a": 1}, expires_at=9.0)
            ),
        ],
        "manifest": [bytes([0]), bytes([1]) + _VALID_MANIFEST.to_bytes()],
        "credential": [
            issue(owner, run_id="fuzz", peer_id=b"p", valid_s=60).to_bytes(),
            revoke(owner, run_id="fuzz", serials={1, 2}).to_bytes(),
        ],
    }
