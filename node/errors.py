"""The node's errors: the one that stops it with a clear line, and what a peer's failure raises."""

from __future__ import annotations

from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError


class NodeError(RuntimeError):
    """A condition that stops the node with one clear line (no traceback)."""


PEER_ERRORS: tuple[type[Exception], ...] = (P2PDaemonError, OSError, EOFError, TimeoutError, ValueError)
"""What asking one peer for something raises when that peer fails or misbehaves, through
``swarm.p2p`` and the transfer protocols: p2pd refusing a dial or a stream (P2PDaemonError), a
broken, reset or malformed stream (OSError: WireError is a ConnectionError; EOFError: a stream cut
mid-frame), a timeout, and content that does not verify (ValueError: the codecs', the replay's,
the records' and the checkpoint files' errors, and unparseable multiaddrs or peer ids). A caller
that catches these moves on to the next peer; anything else is a bug of ours and propagates."""
