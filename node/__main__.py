"""``python -m node`` is ``swarm-node``."""

from node.cli import main

raise SystemExit(main())
