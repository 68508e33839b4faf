"""The averaging round: who takes part, who reduces which shard, and what every member applies.

Layers:
- ``shards``: shard layout and rendezvous-hash ownership (pure).
- ``reduce``: the owner's weighted mean and error feedback (pure tensor math).
- ``wire``: length-prefixed protobuf frames on libp2p streams, with size bounds.
- ``round``: the protocol itself (rendezvous with a conductor, sharded reduce, commit, repair).
"""
