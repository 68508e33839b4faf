"""The averaging round: who takes part, who reduces which shard, and what every member applies.

Layers, from the pure centre out:
- ``shards``: shard layout and rendezvous-hash ownership (pure).
- ``reduce``, ``defence``: the owner's weighted mean, error feedback and outlier defence (tensor math).
- ``schedule``: the round-period policy (pure): the grid of periods, what a round asks for, the swarm's.
- ``state``, ``journal``, ``timing``, ``outcome``: x', committed rounds, deadlines, a round's result.
- Frames on streams come from ``swarm.wire`` (outside this package: the light client uses them too).
- ``host``, ``context``: what the roles need from the node (streams, DHT, clock) and share per round.
- The roles of the protocol, one object each: ``membership`` (the member list), ``conductor`` with
  ``gathering`` (rosters and the commit), ``rendezvous`` (a member's way into a roster),
  ``exchange`` (a member's parts, results and commit), ``owner`` with ``owner_errors`` (reduce one
  shard for everyone), ``transfer`` and ``replay`` (repairing x'), ``faults`` (tests only).
- ``round``: the ``Averager`` the node runs, composed of the roles.
"""
