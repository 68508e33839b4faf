"""The archive as a provider: a py-libp2p host serving archived checkpoints on /swarm/checkpoint/1.

The coordinator has a libp2p identity of its own (Ed25519, ``DIR/identity.key``), listens on
``--archive-listen`` (TCP, Noise), and answers the checkpoint protocol the nodes speak: Latest (the
archive's own pointers, signed with its key), Manifest and Chunks of what it archived. So
``swarm-node pull --peer <the archive's address>`` works when every volunteer is gone, and nodes
that report to the coordinator copy its pointers into the DHT (``archive_pointers`` of the
ReportMetrics answer), which makes the archive one more provider for pulls and joiners.

Runs under trio on a thread of its own (py-libp2p's event loop); imports neither torch nor hivemind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator.store import Store
from swarm.checkpoint.manifest import Manifest, read_chunk
from swarm.checkpoint.serve import answer
from swarm.checkpoint.wire import MAX_FRAME_BYTES, PROTOCOL, pointer_to_pb
from swarm.dht.pointer import Pointer
from swarm.identity import generate_identity, load_identity, peer_id_of, public_key_protobuf
from swarm.proto.swarm.checkpoint.v1 import checkpoint_pb2 as pb
from swarm.wire.frames import WireError
from swarm.wire.trio_streams import TrioFramedStream

logger = logging.getLogger("swarm.coordinator")

POINTER_TTL_S = 3600.0
"""Lifetime of the archive's signed pointers: long, the archive outlives the volunteers."""
START_TIMEOUT_S = 30.0
"""How long ``start`` waits for the py-libp2p host to listen before the coordinator gives up."""
STOP_JOIN_S = 10.0
"""How long ``stop`` waits for the host's thread to end; it is a daemon thread, so the process
does not hang on it beyond that."""
REQUEST_TIMEOUT_S = 30.0
"""How long a client may take to send its request once the stream is open."""
RESIGN_AFTER_S = 60.0
"""The ReportMetrics answer re-signs the archive's pointers at most this often (every report
carries them; signing for each one would cost more than the rest of the answer)."""


class ArchiveHost:
    def __init__(self, store: Store, folder: Path, *, listen: str, announce: tuple[str, ...] = ()):
        self.store = store
        self.folder = folder
        self.listen = listen
        self.announce = announce
        key_path = folder / "identity.key"
        if not key_path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            generate_identity(key_path)
        key = load_identity(key_path)
        if key is None:
            raise ValueError(f"{key_path} is not an Ed25519 identity")
        self.key = key
        self.peer_id = peer_id_of(public_key_protobuf(key.public_key()))
        self.addrs: list[str] = []
        self.peer_name = ""
        """The peer id in base58, once started."""
        self.served_bytes = 0
        self.holdings = ArchiveHoldings(store, folder, self.pointers)
        self._wire_cache: dict[str, tuple[float, list[bytes]]] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: Any = None
        self._stop: Any = None
        self._thread = threading.Thread(target=self._run, name="archive-host", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise OSError(f"the archive cannot listen on {self.listen}: {self._error or 'timed out'}")

    def stop(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            self._token.run_sync_soon(self._stop.set)
            self._thread.join(STOP_JOIN_S)

    def _run(self) -> None:
        import trio

        try:
            trio.run(self._main)
        except BaseException as e:  # the thread's boundary: whatever ended it, ``start`` reports it
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import multiaddr
        import trio
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
        from libp2p import new_host
        from libp2p.crypto.ed25519 import Ed25519PrivateKey as LibKey
        from libp2p.crypto.keys import KeyPair
        from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_pair
        from libp2p.custom_types import TProtocol
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
        from libp2p.security.noise.transport import Transport as NoiseTransport

        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
        private = LibKey.from_bytes(self.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
        key_pair = KeyPair(private, private.get_public_key())
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_pair().private_key)
        host = new_host(key_pair=key_pair, sec_opt={NOISE_PROTOCOL_ID: noise})
        if host.get_id().to_bytes() != self.peer_id:
            raise RuntimeError("py-libp2p derives another peer id from the archive's key")
        self.peer_name = host.get_id().to_base58()
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with host.run(listen_addrs=[multiaddr.Multiaddr(self.listen)]):
            host.set_stream_handler(TProtocol(PROTOCOL), self._handle)
            listening = [str(a).split("/p2p/")[0] for a in host.get_addrs()]
            self.addrs = list(self.announce) or listening
            if any("/0.0.0.0/" in a or "/::/" in a for a in self.addrs):
                logger.warning(
                    "the archive listens on every interface but announces no address peers can dial:"
                    " pass --archive-announce /ip4/<public address>/tcp/<port>"
                )
            logger.info(
                "archive serving checkpoints as %s on %s", host.get_id().to_base58(), ", ".join(self.addrs)
            )
            self._ready.set()
            await self._stop.wait()

    # --- what it serves -----------------------------------------------------------------------------

    def pointers(self, run_id: str) -> list[Pointer]:
        """Signed pointers to this archive's copies of ``run_id``'s archived checkpoints."""
        expires = time.time() + POINTER_TTL_S
        return [
            Pointer(
                run_id=run_id,
                round=c.round,
                global_step=c.global_step,
                manifest_hash=c.manifest_hash,
                total_bytes=c.total_bytes,
                provider=self.peer_id,
                expires_at=expires,
                addrs=tuple(self.addrs[:8]),
            ).signed_by(self.key)
            for c in self.store.checkpoints(run_id, limit=100)
            if c.archived
        ]

    def wire_pointers(self, run_id: str) -> list[bytes]:
        """``pointers(run_id)`` serialized for the ReportMetrics answer, re-signed at most once a minute."""
        now = time.monotonic()
        cached = self._wire_cache.get(run_id)
        if cached is None or now - cached[0] > RESIGN_AFTER_S:
            cached = (now, [pointer_to_pb(p).SerializeToString() for p in self.pointers(run_id)])
            self._wire_cache[run_id] = cached
        return cached[1]

    def _count_served(self, size_bytes: int) -> None:
        self.served_bytes += size_bytes

    async def _handle(self, stream: Any) -> None:
        import trio

        framed = TrioFramedStream(stream, frame_type=pb.Frame, max_frame_bytes=MAX_FRAME_BYTES)
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                frame = await framed.expect("latest_request", "manifest_request", "chunks_request")
            await answer(frame, framed.send, self.holdings, on_chunk_sent=self._count_served)
        except (WireError, trio.TooSlowError) as e:
            logger.info("archive: dropped a request: %s", e)
        except Exception as e:  # the handler task's boundary: a broken stream must not take the host down
            logger.info("archive: stream failed: %s", type(e).__name__)
        finally:
            await framed.close_quietly()


class ArchiveHoldings:
    """The archive's checkpoints as the protocol's answers read them
    (``swarm.checkpoint.serve.Holdings``): its own signed pointers, and the manifests and chunks of
    what it archived under ``folder``."""

    holder = "the archive"

    def __init__(self, store: Store, folder: Path, pointers: Callable[[str], list[Pointer]]):
        self.store, self.folder, self._pointers = store, folder, pointers

    async def pointers(self, run_id: str) -> list[Pointer]:
        """Of ``run_id``; empty: of the first run the store knows."""
        runs = [run_id] if run_id else self.store.runs()[:1]
        return [p for r in runs for p in self._pointers(r)]

    async def spec(self, run_id: str) -> bytes:
        """The archive keeps no run spec: a client then bounds a download by its cap alone."""
        return b""

    def manifest(self, digest: str) -> Manifest | None:
        for run_id in self.store.runs():
            raw = self.store.manifest(run_id, digest)
            if raw is not None and (self.folder / run_id / digest).is_dir():
                return Manifest.from_bytes(raw, expected_hash=digest)
        return None

    async def chunk(self, digest: str, index: int) -> bytes | None:
        import trio

        return await trio.to_thread.run_sync(self._read_chunk, digest, index)

    def _read_chunk(self, digest: str, index: int) -> bytes | None:
        manifest = self.manifest(digest)
        return (
            read_chunk(self.folder / manifest.run_id / digest, manifest, index)
            if manifest is not None
            else None
        )
