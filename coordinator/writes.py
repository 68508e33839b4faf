"""Writes to the coordinator, signed by the peer that makes them; and where Prometheus may scrape it.

A node's report or checkpoint announcement travels as a ``SignedWrite``: the exact protobuf bytes
of the request inside the signed envelope of ``swarm.dht.envelope`` (family ``reports`` or
``announcements``, key ``swarm/<run>/<family>``, subkey the writer's peer id), so the signature
covers the bytes that were sent; protobuf serialisation is not canonical, and nothing is signed
after a re-encoding. The writer's Ed25519 key is in its peer id, so the coordinator needs no key
exchange: ``open_write`` returns the body only when the peer id named signed it, recently.

``scrape_target`` turns a report's ``host:port`` into what ``/sd`` may hand Prometheus: the address
the report came from (never the one it claims) with the port the peer signed, and nothing for an
address Prometheus must never be sent to (link-local and cloud metadata, unspecified, multicast).

Pure: cryptography and msgpack through the envelope; no grpc (``coordinator.core`` uses it).
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.dht.envelope import (
    ENVELOPE_VERSION,
    WRITE_FAMILIES,
    WRITE_LIFETIME_S,
    EnvelopeError,
    key_id,
    open_envelope,
    seal,
)
from swarm.dht.records import record_key
from swarm.identity import peer_id_of, public_key_protobuf
from swarm.peer_names import peer_name

REPORTS, ANNOUNCEMENTS = "reports", "announcements"
SIGNED_FOR_S = WRITE_LIFETIME_S / 2
"""A write is signed to expire this long after it is made: a coordinator whose clock runs up to this
much ahead of the node's still takes it."""


class WriteRefused(ValueError):
    """A write that is not signed by the peer it names, or no longer fresh."""


@dataclass(frozen=True)
class Write:
    """The fields of a ``SignedWrite`` (the gRPC layer copies them out of the message)."""

    run_id: str
    peer_id: str
    header: bytes
    signature: bytes
    credential: bytes = b""


def sign_write(
    private: Ed25519PrivateKey,
    *,
    run_id: str,
    family: str,
    body: bytes,
    credential: bytes = b"",
    now: float | None = None,
) -> Write:
    """``body`` (a request's serialized bytes) signed by ``private`` for the coordinator."""
    now = time.time() if now is None else now
    writer = peer_name(peer_id_of(public_key_protobuf(private.public_key())))
    sealed = seal(
        private, key=record_key(run_id, family), subkey=writer, payload=body, expires_at=now + SIGNED_FOR_S
    )
    return Write(
        run_id=run_id, peer_id=writer, header=sealed["h"], signature=sealed["s"], credential=credential
    )


def open_write(write: Write, *, family: str, now: float) -> bytes:
    """The body of ``write`` once its envelope verifies: ``family``, its run, signed by the key of
    ``write.peer_id``, not expired and not signed to live longer than a write may. Else WriteRefused."""
    try:
        envelope = open_envelope(
            key=key_id(record_key(write.run_id, family)),
            subkey=write.peer_id,
            value={"v": ENVELOPE_VERSION, "h": write.header, "s": write.signature},
            expiration_time=0.0,
            now=now,
            families={family: WRITE_FAMILIES[family]},
        )
    except EnvelopeError as e:
        raise WriteRefused(f"the {family} write of peer {write.peer_id[:16]} does not verify: {e}") from None
    if not envelope.fresh(now):
        raise WriteRefused(
            f"the {family} write of peer {write.peer_id[:16]} expired {now - envelope.expires_at:.0f} s ago"
            " (check the node's clock)"
        )
    assert isinstance(envelope.payload, bytes)  # the family's schema
    return envelope.payload


def scrape_target(source: str, claimed: str) -> str:
    """``host:port`` for Prometheus: the report's source address with the port of ``claimed`` (the
    signed ``host:port``); "" when there is none or the address is one never to scrape.

    ``source`` is gRPC's peer string: ``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``, or another kind
    (a Unix socket), which yields no target."""
    if not claimed:
        return ""
    port_text = claimed.rsplit(":", 1)[-1]
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return ""
    kind, _, rest = source.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    host = _shown_host(rest.rsplit(":", 1)[0].strip("[]"))
    return f"{host}:{int(port_text)}" if host else ""


@functools.lru_cache(maxsize=4096)
def _shown_host(host: str) -> str:
    """``host`` as a target shows it (IPv6 in brackets, IPv4-mapped as IPv4); "" for an address never
    to scrape. Cached: one node reports from one address, round after round."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not scrapeable(address):
        return ""
    return f"[{address}]" if address.version == 6 else str(address)


def served_target(target: str) -> bool:
    """Whether a stored ``host:port`` may go into ``/sd``: an IP address (never a name, which could
    resolve anywhere) that ``scrapeable`` allows. Rows written before targets were derived from the
    source address are checked again here."""
    host, _, port = target.rpartition(":")
    return port.isdigit() and 0 < int(port) <= 65535 and bool(_shown_host(host.strip("[]")))


def scrapeable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether Prometheus may be sent to ``address``: not unspecified, multicast, reserved or
    link-local (169.254.0.0/16 holds the clouds' metadata services; fe80::/10), nor a metadata
    service's IPv6 address."""
    if address.is_unspecified or address.is_multicast or address.is_link_local or address.is_reserved:
        return False
    return address not in _METADATA


_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
"""Metadata services outside the link-local ranges: AWS's IPv6 one and Alibaba Cloud's."""
