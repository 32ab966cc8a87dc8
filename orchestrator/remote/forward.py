"""A unix socket on this machine whose connections are carried to a command on the machine (the Docker engine's socket)."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from typing import Callable

import paramiko

from orchestrator.remote.base import BUF_BYTES, RemoteError


class UnixForwarder:
    """Accept on a private unix socket; pump each connection through a fresh exec channel."""

    def __init__(self, open_channel: Callable[[], paramiko.Channel], command: str):
        self._open_channel, self._command = open_channel, command
        self._dir = tempfile.mkdtemp(prefix="orch-fwd-")  # mode 700: only this user can connect
        self.path = os.path.join(self._dir, "sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._live: set[paramiko.Channel] = set()
        self._lock = threading.Lock()
        self.last_error = ""
        threading.Thread(target=self._accept_loop, name="orch-forward", daemon=True).start()

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
            chan.exec_command(self._command)
        except (RemoteError, OSError, EOFError, paramiko.SSHException) as e:
            self.last_error = str(e)
            conn.close()
            return
        with self._lock:
            self._live.add(chan)

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
        conn.close()
        try:
            chan.close()  # the connection may be gone already (a closed session, a dead proxy)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        with self._lock:
            self._live.discard(chan)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        with self._lock:
            for chan in list(self._live):
                chan.close()
        shutil.rmtree(self._dir, ignore_errors=True)
