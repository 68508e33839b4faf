"""The volunteer process: configuration, the ``swarm-node`` command line, the training loop, lifecycle.

- ``sections``: the typed config tree (one dataclass per section).
- ``config``: where its values come from (file < environment < command line).
- ``trainer``: the local model x_i, its optimizer and schedule, and how round outcomes apply to it.
- ``runner``: one node's life: host, run spec, catch-up, rounds, metrics, summary.
- ``demo``: a local swarm of node processes with one progress bar.
- ``cli``: argument parsing only.
"""
