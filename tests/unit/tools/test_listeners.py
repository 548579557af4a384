"""tools/supervisor.bind_listeners: one SO_REUSEPORT socket per worker on one port, never sharing a port that
something else already holds."""

from __future__ import annotations

import socket

import pytest

from s4.tools.supervisor import bind_listeners


def test_one_socket_per_worker_on_one_port_and_a_second_node_is_refused() -> None:
    listeners = bind_listeners("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in listeners}
        assert len(listeners) == 3 and len(ports) == 1
        with pytest.raises(OSError):  # a second S4 on the same port must not silently take half the connections
            bind_listeners("127.0.0.1", ports.pop(), 2, attempts=2)
    finally:
        for sock in listeners:
            sock.close()


def test_a_port_held_by_another_server_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", other.getsockname()[1], 2, attempts=2)
