"""``python -m coordinator``: the same as ``swarm-coordinator``."""

import sys

from coordinator.cli import main

sys.exit(main())
