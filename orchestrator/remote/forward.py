"""Sockets on this machine whose connections are carried over the SSH connection, each through a channel of its own.

- `UnixForwarder`: a private unix socket; each connection is joined to a command on the machine (the
  Docker engine's socket: `docker system dial-stdio`).
- `Forwarder` on `listen_loopback(port)`: this machine's 127.0.0.1:PORT; each connection is carried to
  an address as the machine sees it (`direct-tcpip`, what `ssh -L` does), e.g. a TensorBoard there that
  listens on its own 127.0.0.1 only.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import threading
from typing import Callable

import paramiko

from orchestrator.remote.base import BUF_BYTES, RemoteError


class PortBusy(RemoteError):
    """The local port asked for is taken (another program, another orch)."""


def listen_loopback(port: int) -> socket.socket:
    """A socket listening on this machine's 127.0.0.1:`port` (0: a free one), never on another address."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a rerun right after Ctrl-C; never a shared listener
    try:
        server.bind(("127.0.0.1", port))
        server.listen(64)
    except OSError as e:
        server.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "is in use already (another program, or another orch)" if e.errno == errno.EADDRINUSE else \
                "needs privileges here"
            raise PortBusy(f"port {port} on this machine (127.0.0.1:{port}) {why}. Pick another with --port, "
                           f"e.g. --port {port + 1 if 0 < port < 65535 else 6007}.") from None
        raise
    return server


class Forwarder:
    """Accept on a listening socket of this machine; pump each connection through a fresh channel.

    `open_channel` returns a channel ready to carry bytes (a command started in it, or a `direct-tcpip`
    one); when it raises, the connection is closed and `last_error` says why."""

    def __init__(self, server: socket.socket, open_channel: Callable[[], paramiko.Channel]):
        self._open_channel, self._server = open_channel, server
        self.port = server.getsockname()[1] if server.family == socket.AF_INET else None
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._live: set[paramiko.Channel] = set()
        self._lock = threading.Lock()
        self.last_error = ""
        self._acceptor = threading.Thread(target=self._accept_loop, name="orch-forward", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        try:
            chan = self._open_channel()
        except (RemoteError, OSError, EOFError, paramiko.SSHException) as e:
            self.last_error = str(e)
            conn.close()
            return
        with self._lock:
            self._live.add(chan)
            if self._stop.is_set():  # closed while this channel was opening
                chan.close()

        def upstream():
            try:
                while data := conn.recv(BUF_BYTES):
                    chan.sendall(data)
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                chan.close()

        up = threading.Thread(target=upstream, daemon=True)
        up.start()
        try:
            while data := chan.recv(BUF_BYTES):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        while chan.recv_stderr_ready():
            self.last_error = chan.recv_stderr(BUF_BYTES).decode(errors="replace")
        up.join(timeout=5)
        try:
            conn.shutdown(socket.SHUT_RDWR)  # wakes an upstream reader still blocked: closing alone would not
        except OSError:
            pass
        conn.close()
        try:
            chan.close()  # the connection may be gone already (a closed session, a dead proxy)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        with self._lock:
            self._live.discard(chan)

    def close(self) -> None:
        self._stop.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # Linux: wakes the accept at once, so the port is free on return
        except OSError:
            pass
        self._server.close()
        if self._acceptor is not threading.current_thread():
            self._acceptor.join(1.0)
        with self._lock:
            for chan in list(self._live):
                chan.close()


class UnixForwarder(Forwarder):
    """A private unix socket; each connection is joined to stdin/stdout of `command` in a fresh exec channel."""

    def __init__(self, open_channel: Callable[[], paramiko.Channel], command: str):
        self._dir = tempfile.mkdtemp(prefix="orch-fwd-")  # mode 700: only this user can connect
        self.path = os.path.join(self._dir, "sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(64)

        def exec_channel() -> paramiko.Channel:
            chan = open_channel()
            try:
                chan.exec_command(command)
            except (OSError, EOFError, paramiko.SSHException):
                chan.close()
                raise
            return chan

        super().__init__(server, exec_channel)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self._dir, ignore_errors=True)
