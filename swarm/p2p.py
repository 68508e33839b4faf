"""The node's libp2p host and DHT: the one module that talks to hivemind.

A ``SwarmHost`` owns one p2pd daemon (one peer id per node), started in this process, and a
hivemind DHT process that shares it. Swarm's own protocols are binary stream handlers on that
daemon, read and written as frames (``swarm.wire.asyncio_streams``). Helper processes die with the
node: they share its process group, and the DHT process runs a watchdog that kills the daemon and
itself when the node's main process disappears (``swarm.parent_watchdog``). Relay slots a node
behind NAT keeps itself, and the relay addresses p2pd can dial, are in ``swarm.relay``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hivemind.dht import DHT
from hivemind.p2p import P2P, PeerID
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError
from hivemind.utils import get_dht_time

from swarm.dht.envelope import Envelope, EnvelopeError, key_id, open_envelope, parse_key, seal
from swarm.dht.records import RecordError
from swarm.identity import IdentityError, generate_identity, load_identity
from swarm.listening import unheard
from swarm.parent_watchdog import abandon, forks_watch_parent, stop
from swarm.peer_names import peer_name, short_name
from swarm.proto.swarm.averaging.v1 import averaging_pb2 as pb
from swarm.record_validator import EnvelopeValidator
from swarm.relay import RelaySlots, daemon_multiaddr
from swarm.wire.asyncio_streams import FramedStream, UploadLimit
from swarm.wire.frames import NO_COUNTER, ByteCounter, WireError

logger = logging.getLogger(__name__)

StreamHandler = Callable[[bytes, FramedStream], Awaitable[None]]


class BootstrapError(RuntimeError):
    """No bootstrap peer answered."""


class ListenError(RuntimeError):
    """p2pd started, but does not listen on some of the addresses it was asked to."""

    def __init__(self, unheard: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"p2pd does not listen on {maddr}: {why}" for maddr, why in unheard))
        self.unheard = unheard
        """(address, why) for each address p2pd left out."""


@dataclass(frozen=True, kw_only=True)
class HostOptions:
    initial_peers: Sequence[str] = ()
    # p2pd speaks QUIC as /quic-v1: a plain /quic address is silently not listened on.
    host_maddrs: Sequence[str] = ("/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1")
    announce_maddrs: Sequence[str] = ()
    identity_path: str | None = None
    nat_port_map: bool = False
    reachability: str = "auto"
    """auto (AutoNAT decides), public or private (forces relay use at once)."""
    auto_relay: bool = True
    """When private, reserve a slot on a relay and announce a /p2p-circuit address."""
    relays: Sequence[str] = ()
    """Relay peers to reserve on; empty: the bootstrap peers serve as relays."""
    startup_timeout_s: float = 20.0
    """Bound on starting p2pd (bootstrap dials included) and on the DHT process becoming ready."""
    max_upload_bytes_per_s: float | None = None
    """Cap on what this host's framed streams write (rounds, state, checkpoints); None: no cap."""


class _StaticRelayP2P(P2P):
    """hivemind's P2P, except that p2pd uses the relays it is given as static relays: a private
    node then reserves a slot at once, where p2pd's relay discovery waits for four DHT-found
    candidates or a three-minute boot delay first."""

    @staticmethod
    def _make_process_args(*args: Any, **kwargs: Any) -> list[str]:
        if kwargs.get("autoRelay") and kwargs.get("trustedRelays"):
            kwargs["relayDiscovery"] = False
        return P2P._make_process_args(*args, **kwargs)


LINGER_S = 30.0
"""How long a served stream waits, after its handler returned, for the peer to close it."""
CONNECT_TIMEOUT_S = 10.0
"""Default bound on dialling a peer at addresses we were given (``SwarmHost.connect``)."""
MIN_RETRY_S = 0.1
"""The least time a second attempt to open a stream gets, even when the first used up the budget
(the dial that just succeeded makes it quick)."""
STREAM_ERRORS = (P2PDaemonError, OSError, EOFError)
"""How opening or using a stream to a peer fails when the peer cannot be reached, leaves or
misbehaves: the daemon's refusal (P2PDaemonError), a broken or timed-out connection or a bad frame
(OSError: ConnectionError, TimeoutError, WireError), or a stream that ended early (EOFError)."""
PEER_ERRORS: tuple[type[Exception], ...] = (*STREAM_ERRORS, TimeoutError, ValueError)
"""What asking one peer for something raises when that peer fails or misbehaves, through
this host and the transfer protocols: p2pd refusing a dial or a stream (P2PDaemonError), a
broken, reset or malformed stream (OSError: WireError is a ConnectionError; EOFError: a stream cut
mid-frame), a timeout, and content that does not verify (ValueError: the codecs', the replay's,
the records' and the checkpoint files' errors, and unparseable multiaddrs or peer ids). A caller
that catches these moves on to the next peer; anything else is a bug of ours and propagates."""


class _Expired(Exception):
    """A record read from the DHT whose envelope has expired by our clock: skipped without a word."""


DHT_WORKERS = 4
"""hivemind's DHT worker threads: its default, pinned so that HIVEMIND_DHT_NUM_WORKERS does not change it."""


@dataclass(frozen=True)
class Sealed:
    """A regular DHT record as its writer sealed it: the parsed payload, and the envelope to store again."""

    record: Any
    value: dict[str, Any]
    expires_at: float


@dataclass
class SwarmHost:
    """A started node host. Use ``await SwarmHost.start(options)``; always ``await host.shutdown()``."""

    p2p: P2P
    dht: DHT
    traffic: ByteCounter = field(default_factory=ByteCounter)
    on_bytes: Callable[[int, int], None] | None = None
    upload_limit: UploadLimit | None = None
    """Shared by every framed stream of this host (the volunteer's upload cap)."""
    address_hints: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    """Addresses peers announce in their heartbeats (see ``remember_addresses``)."""
    signing_key: Ed25519PrivateKey | None = None
    """This host's identity key: it signs every record the host stores (None: it can store none)."""
    relay_slots: RelaySlots = field(init=False)
    """Relay slots this host reserved itself (``keep_relay_slots``)."""

    def __post_init__(self) -> None:
        self.relay_slots = RelaySlots(self.p2p, self._connect_within)

    async def _connect_within(self, peer: bytes, maddrs: Sequence[str], timeout_s: float) -> None:
        await self.connect(peer, maddrs, timeout_s=timeout_s)

    @classmethod
    async def start(cls, options: HostOptions) -> SwarmHost:
        with tempfile.TemporaryDirectory(prefix="swarm-identity-") as scratch:
            identity_path = options.identity_path or str(Path(scratch) / "identity.key")
            if options.identity_path is None:  # a fresh key, known to us as well as to p2pd
                generate_identity(Path(identity_path))
            signing_key = load_identity(Path(identity_path))
            if signing_key is None:
                raise IdentityError(
                    f"{identity_path} is not an Ed25519 key: this node could sign no DHT record"
                    " (move it away to have a new one made)"
                )
            p2p = await _start_daemon(options, identity_path)
        daemon = p2p._child  # hivemind keeps the daemon process here; we need its pid for the watchdog
        # p2pd starts when one of its addresses works: the others it drops with a line in its log.
        missing = unheard(options.host_maddrs, daemon.pid) if daemon is not None else []
        if missing:
            await p2p.shutdown()
            raise ListenError(missing)
        with forks_watch_parent(daemon.pid if daemon is not None else 0):
            dht = await _start_dht(p2p, options)
        limit = options.max_upload_bytes_per_s
        return cls(
            p2p=p2p,
            dht=dht,
            upload_limit=UploadLimit(limit) if limit is not None else None,
            signing_key=signing_key,
        )

    @property
    def peer_id(self) -> bytes:
        return self.p2p.peer_id.to_bytes()

    @property
    def peer_name(self) -> str:
        return self.p2p.peer_id.to_base58()

    async def visible_maddrs(self, latest: bool = False) -> list[str]:
        """Addresses peers can dial us at; ``latest`` asks p2pd again (relay addresses come later).
        Includes the /p2p-circuit addresses of the slots this host reserved itself."""
        maddrs = [str(m) for m in await self.p2p.get_visible_maddrs(latest=latest)]
        return maddrs + self.relay_slots.circuit_addrs(self.peer_name, maddrs)

    async def keep_relay_slots(self, relays: Sequence[str]) -> list[str]:
        """Hold a slot on each of ``relays`` (``.../p2p/<relay id>`` addresses) while p2pd holds none
        (``swarm.relay.RelaySlots``: p2pd's autorelay backs off a relay for an hour once it resets the
        connection). A node that should be reached through relays calls this every few seconds;
        ``visible_maddrs`` announces the slots. Returns the relays newly reserved on."""
        return await self.relay_slots.keep(relays)

    async def connections(self) -> dict[str, str]:
        """Each connected peer (base58) -> "direct", or "relayed" when every connection to it runs
        through a relay (/p2p-circuit)."""
        kinds: dict[str, str] = {}
        for info in await self.p2p.list_peers():
            peer = info.peer_id.to_base58()
            relayed = bool(info.addrs) and all("p2p-circuit" in str(a) for a in info.addrs)
            if kinds.get(peer) != "direct":
                kinds[peer] = "relayed" if relayed else "direct"
        return kinds

    # --- streams --------------------------------------------------------------------------------

    def _framed(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int,
        counter: ByteCounter | None,
        frame_type: Any,
    ) -> FramedStream:
        return FramedStream(
            reader,
            writer,
            counter=self.traffic,
            extra_counter=counter or NO_COUNTER,
            on_bytes=self.on_bytes,
            max_frame_bytes=max_frame_bytes,
            frame_type=frame_type,
            upload_limit=self.upload_limit,
        )

    async def add_handler(
        self,
        protocol: str,
        handler: StreamHandler,
        *,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
        frame_type: Any = pb.Frame,
    ) -> None:
        """Serve ``protocol``; frames a peer sends above ``max_frame_bytes`` end its stream unread.

        Its streams' bytes also count into ``counter`` when one is given; ``frame_type`` is the
        protocol package's ``Frame`` message.
        """

        async def _handle(
            stream_info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            stream = self._framed(reader, writer, max_frame_bytes, counter, frame_type)
            try:
                await handler(stream_info.peer_id.to_bytes(), stream)
                # The handler's last frame may still sit in p2pd's buffers: closing first lets p2pd
                # reset the stream and cut it. The peer closes once it has read it.
                await stream.linger(LINGER_S)
            except WireError as e:
                logger.warning(
                    "rejected a stream %s from %s: %s",
                    protocol,
                    short_name(stream_info.peer_id.to_bytes()),
                    e,
                )
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
                logger.info(
                    "stream %s from %s ended: %s", protocol, short_name(stream_info.peer_id.to_bytes()), e
                )
            except asyncio.CancelledError:  # the node is shutting down
                pass
            except Exception:  # the handler task's boundary: one bad stream must not end the node
                logger.exception("handler %s failed on a stream from %s", protocol, stream_info.peer_id)
            finally:
                stream.close()

        await self.p2p.add_binary_stream_handler(protocol, _handle)

    async def connect(
        self, peer: bytes, maddrs: Sequence[str], *, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        """Dial ``peer`` at ``maddrs`` (without /p2p/): for providers the DHT does not know, such as
        the coordinator's archive. hivemind's P2P has no public call for it: its daemon client does."""
        await asyncio.wait_for(
            self.p2p._client.connect(PeerID(peer), [daemon_multiaddr(m) for m in maddrs]), timeout=timeout_s
        )

    def remember_addresses(self, peer: bytes, maddrs: Sequence[str]) -> None:
        """Where ``peer`` says it can be dialled (its heartbeat). p2pd forgets a peer's addresses
        some time after their connection closes, and a relayed peer's /p2p-circuit address is in no
        routing table: when the relay cuts a relayed connection, neither side can dial the other
        again (``routing: not found``) until told where. ``open_stream`` dials these then."""
        own = f"/p2p/{peer_name(peer)}"
        hints = tuple(m.removesuffix(own) for m in maddrs if m.startswith("/"))
        if hints:
            self.address_hints[peer] = hints
        else:
            self.address_hints.pop(peer, None)

    async def open_stream(
        self,
        peer: bytes,
        protocol: str,
        *,
        timeout_s: float,
        max_frame_bytes: int,
        counter: ByteCounter | None = None,
        frame_type: Any = pb.Frame,
    ) -> FramedStream:
        """A stream to ``peer``. When p2pd cannot reach it on what it knows, dial the addresses the
        peer announced (``remember_addresses``) and try once more within the same time budget."""
        deadline = time.monotonic() + timeout_s
        try:
            _, reader, writer = await asyncio.wait_for(
                self.p2p.call_binary_stream_handler(PeerID(peer), protocol), timeout=timeout_s
            )
        except P2PDaemonError:
            hints = self.address_hints.get(peer)
            left = deadline - time.monotonic()
            if not hints or left <= 0:
                raise
            await self.connect(peer, hints, timeout_s=left)
            _, reader, writer = await asyncio.wait_for(
                self.p2p.call_binary_stream_handler(PeerID(peer), protocol),
                timeout=max(deadline - time.monotonic(), MIN_RETRY_S),
            )
        return self._framed(reader, writer, max_frame_bytes, counter, frame_type)

    # --- DHT ----------------------------------------------------------------------------------

    async def dht_store(self, key: str, value: Any, *, ttl_s: float, subkey: str | None = None) -> bool:
        """Store ``value`` sealed in an envelope signed with this host's key (``swarm.dht.envelope``)."""
        _, family = parse_key(key)
        now = get_dht_time()
        expires_at = now + min(ttl_s, family.max_lifetime_s)
        if family.signer == "pointer":  # signed by its provider, expiry included
            expires_at = float(value["expires_at"])
        sealed = seal(self.signing_key, key=key, subkey=subkey, payload=value, expires_at=expires_at)
        expiration = min(expires_at, now + ttl_s)
        future = self.dht.store(key, sealed, expiration, subkey=subkey, return_future=True)
        return bool(await future)

    def _opened(self, key: str, subkey: Any, found: Any, now: float) -> Envelope:
        """One envelope read from the DHT, checked again here, where its age counts too."""
        envelope = open_envelope(
            key=key_id(key), subkey=subkey, value=found.value, expiration_time=found.expiration_time, now=now
        )
        if not envelope.fresh(now):
            raise _Expired
        return envelope

    async def dht_get_subkeys(
        self, key: str, parse: Callable[[Any], Any], *, latest: bool = True
    ) -> dict[str, Any]:
        """Every valid ``subkey -> record`` under ``key``; invalid entries are logged and dropped."""
        found = await self.dht.get(key, latest=latest, return_future=True)
        if found is None or not isinstance(found.value, dict):
            return {}
        records, now = {}, get_dht_time()
        for subkey, item in found.value.items():
            try:
                records[subkey] = parse(self._opened(key, subkey, item, now).payload)
            except _Expired:
                continue
            except (RecordError, EnvelopeError) as e:
                logger.warning("ignoring a malformed DHT record under %s/%r: %s", key, subkey, e)
        return records

    async def dht_get(self, key: str, parse: Callable[[Any], Any], *, latest: bool = True) -> Any | None:
        found = await self.dht.get(key, latest=latest, return_future=True)
        if found is None:
            return None
        try:
            return parse(self._opened(key, None, found, get_dht_time()).payload)
        except _Expired:
            return None
        except (RecordError, EnvelopeError) as e:
            logger.warning("ignoring a malformed DHT record under %s: %s", key, e)
            return None

    async def dht_get_sealed(self, key: str, parse: Callable[[Any], Any]) -> Sealed | None:
        """The regular record under ``key`` with its envelope as stored (for ``dht_store_sealed``)."""
        found = await self.dht.get(key, latest=True, return_future=True)
        if found is None:
            return None
        try:
            envelope = self._opened(key, None, found, get_dht_time())
            return Sealed(record=parse(envelope.payload), value=found.value, expires_at=envelope.expires_at)
        except _Expired:
            return None
        except (RecordError, EnvelopeError) as e:
            logger.warning("ignoring a malformed DHT record under %s: %s", key, e)
            return None

    async def dht_store_sealed(self, key: str, sealed: Sealed) -> bool:
        """Store again, as it is, an envelope someone else signed (a run's spec: it outlives its creator)."""
        if sealed.expires_at <= get_dht_time():
            return False
        future = self.dht.store(key, sealed.value, sealed.expires_at, return_future=True)
        return bool(await future)

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, stop, self.dht)
        await self.p2p.shutdown()


async def _start_daemon(options: HostOptions, identity_path: str) -> P2P:
    """p2pd with this node's identity, listening and connected to the bootstrap peers."""
    try:
        relays = list(options.relays) or list(options.initial_peers)
        return await _StaticRelayP2P.create(
            initial_peers=list(options.initial_peers) or None,
            host_maddrs=list(options.host_maddrs),
            announce_maddrs=list(options.announce_maddrs) or None,
            identity_path=identity_path,
            # hivemind's "is this identity already online" probe parses RSA keys only; Swarm's
            # identities are Ed25519 (swarm/identity.py), so the probe cannot run.
            check_if_identity_free=False,
            nat_port_map=options.nat_port_map,
            # Every node relays for others (p2pd's relay service, on with use_relay); a private
            # one reserves a slot on a relay and is dialled through it (/p2p-circuit).
            use_relay=True,
            use_auto_relay=options.auto_relay,
            trusted_relays=(relays or None) if options.auto_relay else None,
            force_reachability=None if options.reachability == "auto" else options.reachability,
            startup_timeout=options.startup_timeout_s,
        )
    except P2PDaemonError as e:
        if options.initial_peers and "bootstrap" in str(e):
            raise BootstrapError(
                f"no bootstrap peer answered (tried {', '.join(options.initial_peers)}): check that the"
                " address and its /p2p/ peer id are right, that the peer is running, and that no"
                " firewall blocks its port"
            ) from None
        raise


async def _start_dht(p2p: P2P, options: HostOptions) -> DHT:
    """hivemind's DHT process on ``p2p``, ready; on failure nothing of it (or of ``p2p``) lives on."""
    dht: DHT | None = None
    try:
        # The DHT process is forked from this one; frozen, this process's garbage is not collected
        # there, so no finaliser of ours (a socket's, a gRPC channel's) runs in the fork, where
        # the locks of threads that did not survive the fork stay held.
        gc.freeze()
        try:
            dht = DHT(
                initial_peers=list(options.initial_peers) or None,
                p2p=p2p,
                start=True,
                await_ready=False,
                num_workers=DHT_WORKERS,
                record_validators=[EnvelopeValidator()],
            )
        finally:
            gc.unfreeze()
        await asyncio.get_running_loop().run_in_executor(
            None, dht.wait_until_ready, options.startup_timeout_s
        )
    except TimeoutError:
        assert dht is not None
        await asyncio.to_thread(abandon, dht, dump_stack=True)
        await p2p.shutdown()
        raise TimeoutError(
            f"the DHT process (pid {dht.pid}) was not ready within {options.startup_timeout_s:.0f} s;"
            " its stack is above"
        ) from None
    except BaseException:  # cancelled or failed: the daemon and the half-started DHT go with it
        if dht is not None:
            await asyncio.to_thread(abandon, dht, dump_stack=False)
        await p2p.shutdown()
        raise
    return dht
