"""The node on the network: its host, its heartbeats, and a watch over its connections and relays.

start_host      p2pd and the DHT, from the [network] settings
NetworkWatcher  counts connections, follows this node's addresses, redials when alone
Heartbeat       this node's member record in the DHT, and the live members' wanted periods
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from pathlib import Path

from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError
from hivemind.utils.multiaddr import Multiaddr

from node.errors import NodeError, TryAgainError
from node.progress import Progress
from node.reachability import effective_reachability, reachability
from node.schedule import RoundSchedule
from node.sections import NodeConfig
from swarm.averaging.round import Averager
from swarm.averaging.state import GlobalCopy
from swarm.dht.records import MAX_MEMBER_ADDRS, MemberRecord, members_key
from swarm.metrics import NodeMetrics
from swarm.p2p import PEER_ERRORS, BootstrapError, HostOptions, ListenError, SwarmHost
from swarm.peer_names import peer_from_name

logger = logging.getLogger("swarm.node")

HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 3 * HEARTBEAT_INTERVAL_S
"""A member record outlives two missed heartbeats: a member is gone after the third."""
NETWORK_CHECK_INTERVAL_S = 3.0
_CANNOT_LISTEN = re.compile(r"listen (?:tcp|udp)[46]? (\S+?):(\d+): bind: (.+?)(?= listen |\]|$)")
"""p2pd's reason for each address it could not listen on (the Go error, "address already in use")."""


def check_addresses(config: NodeConfig) -> None:
    """Every multiaddr of the [network] settings parses, its peer id included (a peer id is base58
    without a checksum: a typo shows only as a malformed multihash, or as a peer that never answers)."""
    net = config.network
    named = [
        ("--peer", net.peers),
        ("--host-maddr", net.host_maddrs),
        ("--announce-maddr", net.announce_maddrs),
    ]
    for flag, maddrs in [*named, ("--relay", net.relays)]:
        for maddr in maddrs:
            try:
                Multiaddr(maddr)
            except ValueError as e:
                reason = str(e).removeprefix(f"Invalid MultiAddr {maddr!r} ")
                raise NodeError(f"{flag} {maddr} is malformed: {reason}") from None


async def start_host(config: NodeConfig, identity_path: Path, metrics: NodeMetrics) -> SwarmHost:
    """Start p2pd and the DHT with this node's key. Addresses it cannot parse or listen on stop the
    node with a usage error; a swarm that does not answer (yet) stops it with EXIT_TRY_AGAIN."""
    check_addresses(config)
    net = config.network
    options = HostOptions(
        initial_peers=tuple(net.peers),
        host_maddrs=tuple(net.host_maddrs),
        announce_maddrs=tuple(net.announce_maddrs),
        identity_path=str(identity_path),
        nat_port_map=net.nat_port_map,
        reachability=effective_reachability(net),
        auto_relay=net.auto_relay,
        relays=tuple(net.relays),
        startup_timeout_s=net.startup_timeout_s,
        max_upload_bytes_per_s=None if net.max_upload_mbit is None else net.max_upload_mbit * 1e6 / 8,
    )
    try:
        host = await SwarmHost.start(options)
    except BootstrapError as e:
        raise TryAgainError(
            f"{e}; run id {config.run.run_id!r} (this may pass once a peer is up: exit status 75)"
        ) from None
    except ListenError as e:  # p2pd listens, but not on every address asked
        where = "; ".join(f"--host-maddr {maddr}: {why}" for maddr, why in e.unheard)
        raise NodeError(f"cannot listen on {where}") from None
    except P2PDaemonError as e:  # p2pd listens on none of them
        refused = _CANNOT_LISTEN.findall(str(e))
        if not refused:
            raise
        where = ", ".join(
            f"port {port} is in use ({host}:{port})"
            if "already in use" in reason
            else f"{host}:{port}: {reason}"
            for host, port, reason in refused
        )
        raise NodeError(f"cannot listen on --host-maddr {' '.join(net.host_maddrs)}: {where}") from None
    host.on_bytes = metrics.count_bytes
    return host


class NetworkWatcher:
    """Every few seconds: count direct and relayed connections; say so when our reachable
    addresses change (a private node's relay address appears once its reservation is made, and
    again after a reset); when every connection is gone (a router reboot, a relay reset), dial
    the bootstrap and relay peers again instead of waiting to be found. A node reached through
    relays keeps a slot on them (``SwarmHost.keep_relay_slots``) when p2pd lost its own."""

    def __init__(self, config: NodeConfig, host: SwarmHost, progress: Progress, metrics: NodeMetrics) -> None:
        self.config = config
        self.host = host
        self.progress = progress
        self.metrics = metrics

    async def watch(self) -> None:
        net, p = self.config.network, self.progress
        lonely_since: float | None = None
        connected_once = False
        relays = [*net.relays] or [*net.peers]
        through_relays = net.auto_relay and effective_reachability(net) == "private"
        while True:
            await asyncio.sleep(NETWORK_CHECK_INTERVAL_S)
            try:
                connections = await self.host.connections()
                p.peers = len(connections)
                p.relayed = sorted(peer for peer, kind in connections.items() if kind == "relayed")
                p.direct = sorted(peer for peer, kind in connections.items() if kind == "direct")
                self.metrics.peers.set(p.peers)
                self.metrics.relayed_peers.set(len(p.relayed))
                if connections:
                    lonely_since = None
                    connected_once = True
                elif lonely_since is None and connected_once:  # not the first node, alone at start
                    lonely_since = time.monotonic()
                    logger.warning("lost every connection to the swarm; dialling its peers again")
                if lonely_since is not None and (net.peers or net.relays):
                    reached = await self.redial([*net.relays, *net.peers])
                    if reached:
                        logger.info(
                            "reconnected to %d peer(s) after %.0f s alone",
                            reached,
                            time.monotonic() - lonely_since,
                        )
                through_relays = net.auto_relay and (
                    through_relays or any("p2p-circuit" in m for m in p.maddrs)
                )
                if through_relays and relays:
                    for relay in await self.host.keep_relay_slots(relays):
                        logger.info("p2pd holds no relay slot: reserved one on %s", relay)
                maddrs = await self.host.visible_maddrs(latest=True)
                if maddrs and set(maddrs) != set(p.maddrs):
                    p.maddrs = maddrs
                    logger.info("reachability: %s", reachability(maddrs, net.announce_maddrs))
            # The boundary of a background task that must outlive any one check: the daemon may be
            # busy or restarting, and whatever it raises, the next check tries again.
            except Exception as e:
                logger.debug("network check failed: %s", e)

    async def redial(self, maddrs: list[str]) -> int:
        """Connect to each ``.../p2p/<peer id>`` address that answers; how many did."""
        reached = 0
        for maddr in maddrs:
            address, _, peer = maddr.rpartition("/p2p/")
            try:
                await self.host.connect(peer_from_name(peer), [address])
                reached += 1
            except PEER_ERRORS as e:  # not there (yet): the next check tries again
                logger.debug("dialling %s failed: %s", maddr, e)
        return reached


class Heartbeat:
    """Keeps this node's member record in the DHT (its round, its wanted period, where to dial it),
    and tells the schedule what period the live members want."""

    def __init__(
        self,
        config: NodeConfig,
        host: SwarmHost,
        averager: Averager,
        copy: GlobalCopy,
        progress: Progress,
        schedule: RoundSchedule,
    ) -> None:
        self.config = config
        self.host = host
        self.averager = averager
        self.copy = copy
        self.progress = progress
        self.schedule = schedule

    def record(self) -> MemberRecord:
        copy, averager = self.copy, self.averager
        return MemberRecord(
            round=copy.round,
            global_step=copy.global_step,
            local_steps_per_round=float(self.progress.local_steps_last_round),
            wanted_period_s=self.schedule.wanted_s,
            credential=averager.gate.own_credential,
            fresh=averager.fresh,
            # Relay addresses first: they are the ones no routing table knows.
            addrs=tuple(
                sorted(self.progress.maddrs, key=lambda m: "p2p-circuit" not in m)[:MAX_MEMBER_ADDRS]
            ),
        )

    async def beat(self) -> None:
        while True:
            record = self.record()
            # The boundary of a background task: a heartbeat the DHT did not take (whatever its
            # process raised) is sent again at the next beat, and the record lives for three.
            with contextlib.suppress(Exception):
                await self.host.dht_store(
                    members_key(self.config.run.run_id),
                    record.to_wire(),
                    ttl_s=HEARTBEAT_TTL_S,
                    subkey=self.host.peer_name,
                )
                if self.schedule.adaptive:
                    live = await self.averager.live_members()
                    self.schedule.after_heartbeat([r.wanted_period_s for r in live.values() if not r.leaving])
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
