"""The ports the coordinator listens on: one that another process holds is a mistake in how it was
started, said in one line (``swarm-coordinator: error: port 50051 is in use (--grpc-port)``).

gRPC says why a bind failed only in a log line of its C core, and raises a bare "failed to bind":
``check_free`` asks first, with a socket of its own.
"""

from __future__ import annotations

import errno
import socket


class PortInUseError(OSError):
    """Another process listens on the port a server was asked to listen on."""

    def __init__(self, port: int, server: str) -> None:
        super().__init__(f"port {port} is in use ({server})")
        self.port = port
        self.server = server
        """Which server asked for it: gRPC or HTTP."""


def check_free(host: str, port: int, server: str) -> None:
    """Raise PortInUseError when a TCP listener on ``host:port`` cannot bind because another socket
    holds the port. Port 0 (any free port) is never taken; other failures (an address that is not
    this machine's) are left to the server to report."""
    if port == 0:
        return
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            # As the servers bind: a port whose last connection lingers in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise PortInUseError(port, server) from None
