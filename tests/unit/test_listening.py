"""Which listen addresses a process serves, read from the sockets it really holds: a port asked
for explicitly must be that port, port 0 takes any port of the same transport and interface, and an
address left out says why (the port in use)."""

from __future__ import annotations

import os
import socket

from swarm.listening import unheard


def test_addresses_are_matched_against_the_sockets_held() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound_only,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        bound_only.bind(("127.0.0.1", 0))  # bound, never listening: serves no one
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        idle_port = bound_only.getsockname()[1]
        served = [
            f"/ip4/127.0.0.1/tcp/{tcp_port}",
            "/ip4/127.0.0.1/tcp/0",
            f"/ip4/127.0.0.1/udp/{udp_port}/quic-v1",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "/dns4/localhost/tcp/1",  # names no socket: nothing to compare
        ]
        assert unheard(served, os.getpid()) == []
        left_out = [f"/ip4/127.0.0.1/tcp/{idle_port}", "/ip4/0.0.0.0/tcp/0", f"/ip4/127.0.0.1/tcp/{udp_port}"]
        missing = dict(unheard(left_out, os.getpid()))
        assert missing.keys() == set(left_out)
        assert missing[left_out[0]] == f"port {idle_port} is in use (127.0.0.1:{idle_port})"
        assert "does not listen on tcp 0.0.0.0:0" in missing[left_out[1]]
