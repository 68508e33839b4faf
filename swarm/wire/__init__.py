"""Swarm's framing: length-prefixed protobuf frames on libp2p streams, one core and an adapter per
I/O library.

- ``frames``: the pure core. Encoding, decoding, size limits, errors and byte counters; no I/O, no
  event loop, no networking stack.
- ``asyncio_streams``: frames on the asyncio streams of hivemind's p2pd daemon (the node's host),
  with the volunteer's upload cap. Imports no libp2p.
- ``trio_streams``: frames on py-libp2p's trio streams (the light client, the coordinator's
  archive). Imports no hivemind: hivemind and py-libp2p cannot share one process.

This package's ``__init__`` imports none of them, so either adapter can be imported alone.
"""
