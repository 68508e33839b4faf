"""Typed, versioned, expiring DHT records. Peers are untrusted: every record is validated on read.

``records`` holds the pure data types and their (de)serialisation; the node reads and writes them
through ``swarm.p2p.SwarmHost``, the one module that talks to hivemind.
"""
