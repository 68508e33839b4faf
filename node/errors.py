"""The node's errors: the ones that stop it with a clear line, their exit statuses, and what a
peer's failure raises."""

from __future__ import annotations

from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError

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


PEER_ERRORS: tuple[type[Exception], ...] = (P2PDaemonError, OSError, EOFError, TimeoutError, ValueError)
"""What asking one peer for something raises when that peer fails or misbehaves, through
``swarm.p2p`` and the transfer protocols: p2pd refusing a dial or a stream (P2PDaemonError), a
broken, reset or malformed stream (OSError: WireError is a ConnectionError; EOFError: a stream cut
mid-frame), a timeout, and content that does not verify (ValueError: the codecs', the replay's,
the records' and the checkpoint files' errors, and unparseable multiaddrs or peer ids). A caller
that catches these moves on to the next peer; anything else is a bug of ours and propagates."""
