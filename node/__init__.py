"""The volunteer process: configuration, the ``swarm-node`` command line, the training loop, lifecycle.

- ``sections``: the typed config tree (one dataclass per section).
- ``config``: where its values come from (file < environment < command line).
- ``cli``: argument parsing only; ``light_cli``: the commands that need no torch (pull, status).
- ``runner``: one node's life: builds the roles below in order, runs the loop, leaves.
  - ``preflight``: what is checked before anything starts (model, data, device); ``errors``: the
    one-line errors and their exit statuses (2: a usage error; 75: may pass, try again).
  - ``process``: malloc arenas, the GPU memory cap, logging, signals (stop, pause).
  - ``agreement``: the run spec (published or adopted), credentials, the identity key.
  - ``network``, ``reachability``: the host, heartbeats, the watch over connections and relays.
  - ``catch_up``: x' from the swarm at start and after a missed round (journal, checkpoint, state).
  - ``checkpointing``, ``resume``: swarm checkpoints, this node's resume state.
  - ``coordinator_link``, ``reporting``: round reports and checkpoint announcements.
  - ``schedule``: the round period (the policy is ``swarm.averaging.schedule``).
  - ``progress``: counters, the history, the status file and the summary.
  - ``loop``: local steps on a worker thread, a round at every boundary.
  - ``faults``: test hooks (SWARM_FAULT, SWARM_DUMP_DIR).
- ``trainer``: the local model x_i, its optimizer and schedule, and how round outcomes apply to it.
- ``demo``: a local swarm of node processes with one progress bar.
"""
