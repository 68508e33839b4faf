"""The node's errors: the ones that stop it with a clear line, and their exit statuses. Pure: the
trainer and the GPU check import it without the networking stack."""

from __future__ import annotations

EXIT_USAGE = 2
"""A mistake in how the node was started (a malformed address, an unknown model, a port in use,
settings that contradict the run's): starting it again the same way fails the same way. The same
status as argparse's own usage errors; systemd units do not restart on it
(``RestartPreventExitStatus=2``)."""
EXIT_TRY_AGAIN = 75
"""A condition that may pass by itself (no peer reachable yet): sysexits' EX_TEMPFAIL, so that a
service manager starts the node again later."""


class NodeError(RuntimeError):
    """A condition that stops the node with one clear line on stderr (no traceback): a usage error."""

    exit_status = EXIT_USAGE


class TryAgainError(NodeError):
    """A condition that stops the node now but may pass later; the line says so."""

    exit_status = EXIT_TRY_AGAIN
