"""A local port carried over the SSH connection (`SSHSession.forward_port`, `direct-tcpip`), against the real
loopback sshd reached through the proxy command: a small HTTP server on the "machine's" 127.0.0.1 (here, since
the sshd is this machine's) is reached through orch's forwarded port on this machine.
"""
from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.remote.forward import PortBusy, listen_loopback
from orchestrator.remote.ssh import connect
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.needs_sshd

WAIT_S = 10  # every wait in this file is bounded by this


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one forwarded connection

    def do_GET(self):
        self._reply(f"hello {self.path}".encode())

    def do_POST(self):
        self._reply(self.rfile.read(int(self.headers["Content-Length"]))[::-1])

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def remote_http():
    """An HTTP server on 127.0.0.1 (the "machine's" loopback: the sshd runs here), on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(WAIT_S)


def _get(port: int, path: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", data=data, timeout=WAIT_S) as r:
        return r.read()


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    """What arrives until `marker` (a reply's headers and body may come in separate reads), bounded."""
    got, deadline = b"", time.monotonic() + WAIT_S
    while marker not in got and time.monotonic() < deadline:
        piece = sock.recv(4096)
        if not piece:
            break
        got += piece
    return got


def _refused(port: int) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def test_a_local_port_reaches_a_server_on_the_machines_loopback(ssh_endpoint, remote_http):
    with connect(ssh_endpoint) as session:
        fwd = session.forward_port(listen_loopback(0), "127.0.0.1", remote_http)
        port = fwd.port
        assert port and port != remote_http
        assert _get(port, "/one") == b"hello /one"
        # Several connections at once, and bytes both ways: 1 MB up, the same reversed down.
        payload = bytes(range(256)) * 4096
        with ThreadPoolExecutor(8) as pool:
            gets = [pool.submit(_get, port, f"/n{i}") for i in range(16)]
            posts = [pool.submit(_get, port, "/echo", payload) for _ in range(4)]
            assert [g.result(WAIT_S) for g in gets] == [f"hello /n{i}".encode() for i in range(16)]
            assert all(p.result(WAIT_S) == payload[::-1] for p in posts)
        # A connection held open (keep-alive) while the forward stops: it ends, it does not hang.
        held = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        held.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"hello /held" in _recv_until(held, b"hello /held")
        fwd.close()
        held.settimeout(WAIT_S)
        try:
            rest = held.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        held.close()
        assert _refused(port)
        # The session itself is fine: the forward was its own.
        assert session.run("true").ok


def test_closing_the_session_closes_its_forwards(ssh_endpoint, remote_http):
    with connect(ssh_endpoint) as session:
        port = session.forward_port(listen_loopback(0), "127.0.0.1", remote_http).port
        assert _get(port, "/x") == b"hello /x"
    assert _refused(port)


def test_nothing_listening_there_closes_the_connection_and_says_why(ssh_endpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # bound, never listening: nothing accepts on it
        with connect(ssh_endpoint) as session:
            fwd = session.forward_port(listen_loopback(0), "127.0.0.1", closed_port)
            with pytest.raises((urllib.error.URLError, ConnectionError, http.client.RemoteDisconnected)):
                _get(fwd.port, "/")
            deadline = time.monotonic() + WAIT_S
            while not fwd.last_error and time.monotonic() < deadline:
                time.sleep(0.05)
            assert f"127.0.0.1:{closed_port}" in fwd.last_error and "refused" in fwd.last_error


def test_a_busy_local_port_is_a_message_naming_the_option():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortBusy) as e:
            listen_loopback(port)
    assert f"port {port}" in str(e.value) and "--port" in str(e.value)


def test_the_local_port_listens_on_loopback_only():
    server = listen_loopback(0)
    try:
        assert server.getsockname()[0] == "127.0.0.1"
    finally:
        server.close()
