"""A protocol simulator: the real round roles over an in-memory host, modelled links and DHT, virtual time.

Layers, inside out:
- ``loop``: an asyncio loop on a virtual clock (waits cost no real time); ``inline``: thread work
  run inline so that the clock never jumps past it.
- ``network``: members' access links (bandwidth, latency, relays with their data limit, CPU), the
  transfers on them and their charged bytes.
- ``streams``: in-memory streams under the real ``FramedStream``; ``ChargePolicy`` scales codec
  payloads to the simulated model's size. ``dht``: values per key/subkey with expiry on replicas.
- ``host``: ``SimHost``, the ``RoundHost`` the real ``Averager`` runs on. ``codec``: CPU and bytes
  of the real codec measured once at the model's size and charged per call.
- ``simulation``: N members in lockstep rounds with churn and kills, and each round's report.

Why a package of the library and not a benchmark script: the CI test (tests/protocol/test_sim.py)
and the benchmark (benchmarks/swarm_sim.py) both drive it, and later work (groups, roles by
ability) is to be judged in it. It imports the round protocol and the DHT's record types, never
hivemind, libp2p or ``swarm.p2p`` (an import-linter contract says so).
"""
