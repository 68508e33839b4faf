"""The coordinator (``swarm-coordinator``): the run's record of metrics and checkpoints.

No torch and no hivemind: it runs on a small VM. Layers, from the centre out:
- ``coordinator.rows``: the record's rows, plain frozen data classes.
- ``coordinator.schema``: the SQLite schema, retention settings, the SQL its queries share.
- ``coordinator.store``: SQLite (WAL) tables, retention; ``coordinator.attested``: what the online
  members attest (the run's round, its checkpoint) and what the caps count.
- ``coordinator.writes``: signed writes (a report, an announcement) and the Prometheus targets they give.
- ``coordinator.limits``: token buckets per source address and per run.
- ``coordinator.core``: who may write, validation of everything that arrives, caps, domain errors;
  no transport.
- ``coordinator.metrics``: every Prometheus metric it exports (per-run aggregates read at scrape time).
- ``coordinator.service``: the gRPC servicer (thin), status-code mapping, health and reflection.
- ``coordinator.ports``: a port in use, told apart before gRPC logs it.
- ``coordinator.web``: /metrics, Prometheus service discovery (/sd), the dashboard and its JSON.
- ``coordinator.archive``: copies announced checkpoints (the light client's pull).
- ``coordinator.archive_host``: serves the archive on /swarm/checkpoint/1 (py-libp2p, trio).
- ``coordinator.cli``: ``swarm-coordinator serve``.
"""
