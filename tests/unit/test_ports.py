"""bus.ports: a free port outside the ephemeral range, and whether a port is held by a listener."""

from __future__ import annotations

import socket

from bus.ports import _EPHEMERAL, free_port, taken


def test_a_free_port_is_outside_the_ephemeral_range_and_can_be_listened_on() -> None:
    low, high = _EPHEMERAL
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()


def test_a_listening_port_is_taken_until_its_listener_closes() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", free_port()))
    server.listen()
    port = server.getsockname()[1]
    assert taken(port)
    # A closed connection lingering in TIME_WAIT on the port does not make it taken.
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()
    client.close()
    server.close()
    assert not taken(port)
