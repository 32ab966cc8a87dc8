"""The SSH proxy command (a bastion, SSM Session Manager, or the tests' loopback) and the `ssh` command line."""
from __future__ import annotations

import os
import select
import shlex
import signal
import socket
import subprocess
import tempfile

import paramiko

from orchestrator.records import SSHEndpoint
from orchestrator.remote.base import RemoteError, SSHUnreachable
from orchestrator.remote.hostkeys import known_hosts_file


# -- the proxy command -----------------------------------------------------------------------------
def expand_proxy_command(template: str, endpoint: SSHEndpoint, only: str | None = None) -> str:
    """OpenSSH's ProxyCommand tokens: %h host, %p port, %r user, %% a percent sign; and %i, the instance id.

    `only`: expand just these tokens and leave the others as written (for a command OpenSSH expands).
    """
    out, i = [], 0
    subs = {"h": endpoint.host, "p": str(endpoint.port), "r": endpoint.user, "%": "%", "i": endpoint.instance_id}
    while i < len(template):
        c = template[i]
        if c == "%" and i + 1 < len(template) and template[i + 1] in subs:
            token = template[i + 1]
            if only is not None and token not in only:
                out.append(c + token)
            elif subs[token] is None:
                raise RemoteError(f"the SSH proxy command uses %i, the instance id, but no instance id is known "
                                  f"for {endpoint.host}: {template}\nUse %h (the address) there, or reach the "
                                  "machine through `orch`, which knows its instance.")
            else:
                out.append(subs[token])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class ProxySocket:
    """A socket-like pipe to a proxy command (what paramiko's ProxyCommand is, minus its flaws).

    paramiko's ProxyCommand spins on EOF instead of reporting it, so a dead proxy looks like an
    idle link; here EOF is returned at once, and the proxy's stderr is kept for error messages.
    """

    def __init__(self, command: str):
        self.command = command
        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(
                shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0, start_new_session=True,
            )
        except OSError as e:
            raise SSHUnreachable(f"the SSH proxy command could not start ({e}): {command}") from e
        self.timeout: float | None = None

    def send(self, data) -> int:
        try:
            return os.write(self.process.stdin.fileno(), data)
        except OSError as e:
            raise paramiko.ProxyCommandFailure(self.command, e.strerror) from e

    def recv(self, size: int) -> bytes:
        fd = self.process.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], self.timeout)
        if not readable:
            raise socket.timeout()
        try:
            return os.read(fd, size)  # b"" at EOF: the transport sees the drop
        except OSError as e:
            raise paramiko.ProxyCommandFailure(self.command, e.strerror) from e

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-1000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    @property
    def closed(self) -> bool:
        return self.process.poll() is not None

    _closed = closed

    def close(self) -> None:
        # The pipes are left to the garbage collector: the transport thread may be blocked reading
        # them right now, and closing an fd under it would raise EBADF (or read a reused fd).
        # Ending the proxy gives that reader a clean EOF instead.
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()




def openssh_command(endpoint: SSHEndpoint, extra: list[str]) -> list[str]:
    """The `ssh` command line that reaches the endpoint as orch does: its key, the host key orch
    pinned (under the instance id when there is one), its proxy command."""
    known = str(known_hosts_file(endpoint))
    # ssh splits option values on whitespace (UserKnownHostsFile takes a list) and expands %: quote.
    quoted = '"' + known.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
    args = ["ssh", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=accept-new", "-p", str(endpoint.port),
            "-o", f"UserKnownHostsFile={quoted}"]
    if endpoint.key_path:
        args += ["-i", str(endpoint.key_path)]
    if endpoint.instance_id:
        args += ["-o", f"HostKeyAlias={endpoint.instance_id}"]
    if endpoint.proxy_command:
        args += ["-o", f"ProxyCommand={expand_proxy_command(endpoint.proxy_command, endpoint, only='i')}"]
    return args + [f"{endpoint.user}@{endpoint.host}", *extra]
