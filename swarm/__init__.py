"""Swarm: data-parallel training over the open internet with compressed, sharded averaging.

Layers, from the centre out (the centre never imports asyncio, grpc, hivemind, libp2p or
prometheus_client):
- ``swarm.compression``: codecs, pure tensor math.
- ``swarm.averaging.shards`` / ``swarm.averaging.reduce``: shard layout, ownership, the weighted mean.
- ``swarm.data``, ``swarm.models``: corpus, batches, model construction.
- ``swarm.wire``: length-prefixed protobuf frames; a pure core and an adapter per I/O library.
- ``swarm.averaging.round``: the round protocol on libp2p streams.
- ``swarm.dht``: typed DHT records; ``swarm.p2p``: the node's hivemind host (with ``swarm.relay``,
  ``swarm.listening`` and ``swarm.parent_watchdog``).
- ``swarm.checkpoint``: checkpoints and their transfer; ``swarm.light``: the py-libp2p light client.
- ``swarm.metrics``: every Prometheus metric of a node.

Importing ``swarm`` starts no thread, touches no GPU and imports none of the networking stacks.
"""

__version__ = "0.1.0"
