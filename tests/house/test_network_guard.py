"""The suite's own guard: a test can reach loopback and unix sockets, nothing else (pytest-socket, pyproject.toml)."""
from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_an_address_moto_might_hand_out_is_never_dialled():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("54.214.247.11", 22), timeout=1)


def test_loopback_is_reachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
