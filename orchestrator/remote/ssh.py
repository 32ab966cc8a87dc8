"""Run commands and move files on a job's machine: SSH (paramiko) or this machine, one interface.

    session = wait_for_ssh(endpoint, deadline_s=300)     # or connect(endpoint), or LocalSession()
    result = session.run("nvidia-smi -L")                # RunResult(exit_code, stdout, stderr)
    client = docker.DockerClient(base_url="unix://" + session.docker_socket())

Host keys are pinned in `endpoint.known_hosts` on first connect, under the endpoint's instance id
when it has one (AWS gives a new instance an old one's address), else under its address; a changed
key is refused. An endpoint's `proxy_command` (OpenSSH syntax, %h %p %r, plus %i for the instance
id) carries the connection through a bastion or SSM Session Manager. Nothing from the local
environment is sent to the machine: no environment variables are forwarded, and callers build
commands from their own arguments only.

A dropped link that says nothing (a laptop that slept, a NAT that forgot the flow) would leave a
read or write blocked for good: long transfers and log streams run under `LinkWatch`, which asks
the machine for a reply every $ORCH_KEEPALIVE_S seconds (default 15) and drops the connection when
none comes in twice that, so the caller's reconnect or resume path takes over.
"""
from __future__ import annotations

import select
import shlex
import socket
import sys
import threading
import time
from typing import Callable

import paramiko

from orchestrator.records import SSHEndpoint
from orchestrator.remote.base import (
    BUF_BYTES,
    TRANSPORT_ERRORS,
    CommandFailed,
    ConnectionLost,
    HostKeyChanged,
    RemoteError,
    RunResult,
    SSHUnreachable,
    keepalive_s,
)
from orchestrator.remote.forward import Forwarder, UnixForwarder
from orchestrator.remote.hostkeys import (
    PinOnFirstUse,
    address_name,
    fingerprint,
    host_key_name,
    known_hosts_file,
    load_host_keys,
    load_key,
)
from orchestrator.remote.proxy import ProxySocket, expand_proxy_command


# -- SSH ------------------------------------------------------------------------------------------
def describe(endpoint: SSHEndpoint) -> str:
    where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
    return where + (" (via proxy command)" if endpoint.proxy_command else "")


def connect(endpoint: SSHEndpoint, timeout: float = 20.0) -> "SSHSession":
    """One SSH connection attempt; raises `SSHUnreachable`, `HostKeyChanged` or `KeyFileError`."""
    key = load_key(endpoint.key_path)
    known = known_hosts_file(endpoint)
    name = host_key_name(endpoint)
    client = paramiko.SSHClient()
    # paramiko looks keys up by the address it dials; hand it what is pinned under our name, so that
    # it asks for that key type and refuses another key.
    for key_type, pinned in (load_host_keys(known).lookup(name) or {}).items():
        client.get_host_keys().add(address_name(endpoint), key_type, pinned)
    client.set_missing_host_key_policy(PinOnFirstUse(known, name))
    proxy = None
    if endpoint.proxy_command:
        proxy = ProxySocket(expand_proxy_command(endpoint.proxy_command, endpoint))
    where = describe(endpoint)
    try:
        client.connect(
            hostname=endpoint.host, port=endpoint.port, username=endpoint.user, pkey=key, sock=proxy,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            allow_agent=key is None, look_for_keys=key is None,
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        _close_proxy(proxy)
        pinned = f"{e.expected_key.get_name()} {fingerprint(e.expected_key)}" if e.expected_key else "another key type"
        cause = ("If the instance was rebuilt on purpose" if endpoint.instance_id
                 else "If the instance was replaced at the same address")
        raise HostKeyChanged(
            f"The host key of {name} changed: {known} pins {pinned}, the machine offered {e.key.get_name()} "
            f"{fingerprint(e.key)}. Nothing was sent to it. {cause}, forget the old key "
            f"and try again:\n  ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(known))}\n"
            "Otherwise someone may be intercepting the connection."
        ) from e
    except paramiko.AuthenticationException as e:
        client.close()
        _close_proxy(proxy)
        raise SSHUnreachable(f"{where} refused the key {endpoint.key_path} ({e}). A new instance may not have "
                             "installed it yet; otherwise the key is not this instance's key pair.") from e
    except (OSError, EOFError, paramiko.SSHException) as e:
        detail = proxy.stderr_tail() if proxy else ""
        client.close()
        _close_proxy(proxy)
        reason = f"{type(e).__name__}: {e}".rstrip(": ")
        if detail:
            reason += f"; proxy command said: {detail}"
        raise SSHUnreachable(f"could not open SSH to {where}: {reason}") from e
    transport = client.get_transport()
    transport.set_keepalive(max(1, round(keepalive_s())))
    return SSHSession(client, endpoint, proxy)


def _close_proxy(proxy: ProxySocket | None) -> None:
    if proxy is not None:
        proxy.close()


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def wait_for_ssh(
    endpoint: SSHEndpoint,
    deadline_s: float,
    *,
    connect_timeout: float = 10.0,
    first_delay_s: float = 1.0,
    max_delay_s: float = 15.0,
    progress: Callable[[str], None] | None = _print_progress,
) -> "SSHSession":
    """Connect, retrying with exponential backoff (first_delay_s doubling up to max_delay_s) until deadline_s.

    A changed host key or a bad key file fails at once: waiting would not fix them.
    """
    start = time.monotonic()
    delay, attempt = first_delay_s, 0
    while True:
        attempt += 1
        left = deadline_s - (time.monotonic() - start)
        try:
            return connect(endpoint, timeout=max(1.0, min(connect_timeout, left)))
        except SSHUnreachable as e:
            last = e
        elapsed = time.monotonic() - start
        if elapsed >= deadline_s:
            raise SSHUnreachable(
                f"SSH to {describe(endpoint)} did not come up in {deadline_s:.0f} s ({attempt} attempts). "
                f"Last error: {last}\nThe instance was left as it is. Check it is running and that its "
                "security group admits your address, then run the same command again to carry on."
            ) from last
        pause = min(delay, deadline_s - elapsed)
        if progress:
            progress(f"waiting for SSH on {describe(endpoint)}: attempt {attempt} failed after "
                     f"{elapsed:.0f} s of {deadline_s:.0f} s ({_short(last)}); retrying in {pause:.0f} s")
        time.sleep(pause)
        delay = min(delay * 2, max_delay_s)


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]


class SSHStream:
    def __init__(self, channel: paramiko.Channel, where: str):
        self._channel, self._where = channel, where
        self.stdin = channel.makefile_stdin("wb")
        self.stdout = channel.makefile("rb")
        self.stderr = channel.makefile_stderr("rb")

    def close_stdin(self) -> None:
        self.stdin.close()  # flushes, then sends EOF

    def wait(self, timeout: float | None = None) -> int:
        if not self._channel.status_event.wait(timeout):
            if self._channel.closed:
                raise ConnectionLost(f"the connection to {self._where} dropped before the command finished")
            raise TimeoutError(f"the command on {self._where} did not finish in {timeout} s")
        if self._channel.exit_status == -1 and not self._channel.get_transport().is_active():
            raise ConnectionLost(f"the connection to {self._where} dropped before the command finished")
        return self._channel.exit_status

    def close(self) -> None:
        self._channel.close()


class SSHSession:
    """An open SSH connection. Thread-safe to open several channels (paramiko multiplexes them)."""

    def __init__(self, client: paramiko.SSHClient, endpoint: SSHEndpoint, proxy: ProxySocket | None):
        self._client, self._proxy, self.endpoint = client, proxy, endpoint
        self.where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
        self._forwarders: list[Forwarder] = []

    @property
    def alive(self) -> bool:
        t = self._client.get_transport()
        return t is not None and t.is_active()

    def check_alive(self, timeout: float = 10.0) -> bool:
        """Ask the server for a reply (an OpenSSH keepalive request); False if none comes in `timeout` s.

        Plain keepalives expect no answer, so a silently dropped link (a laptop that slept, a NAT
        that forgot the flow) only shows up here, or after TCP gives up many minutes later.
        """
        t = self._client.get_transport()
        if t is None or not t.is_active():
            return False
        answered = threading.Event()

        def ask():
            try:
                t.global_request("keepalive@openssh.com", wait=True)  # a refusal is an answer too
                answered.set()
            except TRANSPORT_ERRORS:
                pass

        threading.Thread(target=ask, daemon=True).start()
        return answered.wait(timeout) and t.is_active()

    def _open_channel(self) -> paramiko.Channel:
        t = self._client.get_transport()
        try:
            if t is None or not t.is_active():
                raise paramiko.SSHException("transport closed")
            return t.open_session(window_size=8 << 20, max_packet_size=32768)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectionLost(f"the connection to {self.where} is closed ({e}); connect again") from e

    def run(self, cmd: str, check: bool = False, timeout: float | None = None) -> RunResult:
        """Run `cmd` in the login shell; stdin is empty. `timeout` bounds the whole command."""
        chan = self._open_channel()
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(cmd)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(BUF_BYTES)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(BUF_BYTES)
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed:
                    break
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"`{cmd}` did not finish on {self.where} within {timeout} s")
                select.select([chan], [], [], min(wait, 1.0))
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not chan.status_event.wait(left if left is not None else 30.0):
                if chan.closed or not self.alive:
                    raise ConnectionLost(f"the connection to {self.where} dropped while running `{cmd}`")
                raise TimeoutError(f"`{cmd}` did not finish on {self.where} within {timeout} s")
            code = chan.exit_status
        except TimeoutError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise ConnectionLost(f"the connection to {self.where} dropped while running `{cmd}` ({e})") from e
        finally:
            chan.close()
        if code == -1 and not self.alive:
            raise ConnectionLost(f"the connection to {self.where} dropped while running `{cmd}`")
        result = RunResult(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and code != 0:
            raise CommandFailed(self.where, cmd, result)
        return result

    def exec_stream(self, cmd: str) -> SSHStream:
        """Start `cmd` with pipes. Read stderr (or keep it small): unread output stalls the channel."""
        chan = self._open_channel()
        try:
            chan.exec_command(cmd)
        except (OSError, EOFError, paramiko.SSHException) as e:
            chan.close()
            raise ConnectionLost(f"the connection to {self.where} dropped starting `{cmd}` ({e})") from e
        return SSHStream(chan, self.where)

    def sftp(self) -> paramiko.SFTPClient:
        """A new SFTP client on this connection; close it when done."""
        try:
            return self._client.open_sftp()
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise ConnectionLost(f"could not open SFTP on {self.where} ({e})") from e

    def forward(self, command: str) -> str:
        """A local unix socket; each connection to it is joined to stdin/stdout of `command` on the machine."""
        fwd = UnixForwarder(self._open_channel, command)
        self._forwarders.append(fwd)
        return fwd.path

    def forward_port(self, listener: socket.socket, host: str, port: int) -> Forwarder:
        """Carry each connection to `listener` (see `forward.listen_loopback`) to `host:port` as the machine
        sees it, through a `direct-tcpip` channel (`ssh -L`): "127.0.0.1" is the machine's own loopback.
        Closed with the session, or by its `close()`."""

        def open_tcp() -> paramiko.Channel:
            t = self._client.get_transport()
            try:
                if t is None or not t.is_active():
                    raise paramiko.SSHException("transport closed")
                return t.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), window_size=8 << 20,
                                      max_packet_size=32768, timeout=30)
            except paramiko.ChannelException as e:  # the machine's sshd could not connect there
                raise RemoteError(f"{host}:{port} on {self.where} refused the connection ({e})") from e
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise ConnectionLost(f"the connection to {self.where} is closed ({e}); connect again") from e

        fwd = Forwarder(listener, open_tcp)
        self._forwarders.append(fwd)
        return fwd

    def docker_socket(self, docker_host: str | None = None) -> str:
        """A local socket path for the machine's Docker engine (`docker system dial-stdio` per connection).

        `docker_host` (e.g. "unix:///run/docker.sock") picks an engine other than the machine's default.
        """
        host = f" -H {shlex.quote(docker_host)}" if docker_host else ""
        return self.forward(f"docker{host} system dial-stdio")

    def close(self) -> None:
        for fwd in self._forwarders:
            fwd.close()
        self._forwarders.clear()
        self._client.close()
        _close_proxy(self._proxy)

    def abort(self) -> None:
        """Drop the connection without a goodbye: on a dead link a polite close blocks writing to it.

        Whatever is blocked on the connection (a read, a write, a channel) fails at once.
        """
        if self._proxy is not None:
            self._proxy.close()  # the proxy's end: blocked reads see EOF, blocked writes EPIPE
        else:
            t = self._client.get_transport()
            try:
                t.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on the socket; close() would not
            except (AttributeError, OSError):
                pass
        try:
            self.close()
        except TRANSPORT_ERRORS:
            pass

    def __enter__(self) -> "SSHSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
