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

import base64
import hashlib
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Protocol

import paramiko

from orchestrator.providers.base import SSHEndpoint

# What a dropped connection raises from paramiko or a pipe; callers turn it into ConnectionLost.
TRANSPORT_ERRORS = (OSError, EOFError, paramiko.SSHException)

KEEPALIVE_S = 15  # a NAT or bastion that drops idle flows usually waits minutes; this is well inside
_BUF = 1 << 16


# -- results and errors ------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteError(RuntimeError):
    """Something about reaching or using the machine failed; the message says what to do."""


class KeyFileError(RemoteError):
    """The private key is missing or too open."""


class HostKeyChanged(RemoteError):
    """The machine presented a different host key than the one pinned."""


class SSHUnreachable(RemoteError):
    """No SSH session could be opened (refused, timed out, proxy failed, auth refused)."""


class ConnectionLost(RemoteError):
    """An open connection dropped while a command or transfer was in flight."""


class CommandFailed(RemoteError):
    def __init__(self, where: str, cmd: str, result: RunResult):
        self.cmd, self.result = cmd, result
        tail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"`{cmd}` failed on {where} with exit code {result.exit_code}" + (f":\n{tail}" if tail else ""))


# -- the interface both kinds of session offer ------------------------------------------------
class Stream(Protocol):
    """A running command: write its stdin, read its stdout/stderr (binary), then wait."""

    stdin: IO[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]

    def close_stdin(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def close(self) -> None: ...


class Files(Protocol):
    """The slice of `paramiko.SFTPClient` that callers use; `LocalFiles` offers the same."""

    def stat(self, path: str): ...
    def open(self, path: str, mode: str = "r"): ...
    def listdir(self, path: str = ".") -> list[str]: ...
    def remove(self, path: str) -> None: ...
    def close(self) -> None: ...


class Session(Protocol):
    where: str  # for messages: "ubuntu@203.0.113.10:22" or "this machine"

    def run(self, cmd: str, check: bool = False, timeout: float | None = None) -> RunResult: ...
    def exec_stream(self, cmd: str) -> Stream: ...
    def sftp(self) -> Files: ...
    def docker_socket(self, docker_host: str | None = None) -> str: ...
    def close(self) -> None: ...


# -- host keys and keys ---------------------------------------------------------------------------
def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_path(endpoint: SSHEndpoint) -> Path:
    if endpoint.known_hosts is not None:
        return Path(endpoint.known_hosts)
    from orchestrator.config import orch_home

    return orch_home() / "known_hosts"


def keepalive_s() -> float:
    """Seconds between keepalives and liveness checks: $ORCH_KEEPALIVE_S, else KEEPALIVE_S."""
    try:
        return max(0.1, float(os.environ.get("ORCH_KEEPALIVE_S") or KEEPALIVE_S))
    except ValueError:
        return float(KEEPALIVE_S)


def _address_name(endpoint: SSHEndpoint) -> str:
    return endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"


def _host_key_name(endpoint: SSHEndpoint) -> str:
    """The name a machine's key is pinned under: its instance id when known, else its address.

    An instance id names one machine for its life, while AWS hands a terminated instance's address
    to the next one (and an SSM proxy never sees an address at all).
    """
    return endpoint.instance_id or _address_name(endpoint)


def _load_host_keys(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    return keys


class _PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key in our known_hosts under `name` (mode 600, atomic); never ask."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def missing_host_key(self, client, hostname, key):
        keys = _load_host_keys(self.path)
        keys.add(self.name, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".known_hosts.")
        try:
            os.fchmod(fd, 0o600)
            os.close(fd)
            keys.save(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _load_key(path: Path | None) -> paramiko.PKey | None:
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        raise KeyFileError(f"SSH key {path} does not exist. It is created at launch; if it was deleted, "
                           "the instance cannot be reached with it: run `orch teardown JOB` and launch again.")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"SSH key {path} is readable by other users (mode {mode:o}); it was not used. "
                           f"Fix: chmod 600 {shlex.quote(str(path))}")
    try:
        return paramiko.PKey.from_path(str(path))
    except (paramiko.SSHException, ValueError) as e:
        raise KeyFileError(f"SSH key {path} could not be read ({e}); it must be an unencrypted OpenSSH "
                           "private key (ed25519, ecdsa or rsa)") from e


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


class _ProxySocket:
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


# -- SSH ------------------------------------------------------------------------------------------
def _describe(endpoint: SSHEndpoint) -> str:
    where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
    return where + (" (via proxy command)" if endpoint.proxy_command else "")


def connect(endpoint: SSHEndpoint, timeout: float = 20.0) -> "SSHSession":
    """One SSH connection attempt; raises `SSHUnreachable`, `HostKeyChanged` or `KeyFileError`."""
    key = _load_key(endpoint.key_path)
    known = _known_hosts_path(endpoint)
    name = _host_key_name(endpoint)
    client = paramiko.SSHClient()
    # paramiko looks keys up by the address it dials; hand it what is pinned under our name, so that
    # it asks for that key type and refuses another key.
    for key_type, pinned in (_load_host_keys(known).lookup(name) or {}).items():
        client.get_host_keys().add(_address_name(endpoint), key_type, pinned)
    client.set_missing_host_key_policy(_PinOnFirstUse(known, name))
    proxy = None
    if endpoint.proxy_command:
        proxy = _ProxySocket(expand_proxy_command(endpoint.proxy_command, endpoint))
    where = _describe(endpoint)
    try:
        client.connect(
            hostname=endpoint.host, port=endpoint.port, username=endpoint.user, pkey=key, sock=proxy,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            allow_agent=key is None, look_for_keys=key is None,
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        _close_proxy(proxy)
        pinned = f"{e.expected_key.get_name()} {_fingerprint(e.expected_key)}" if e.expected_key else "another key type"
        cause = ("If the instance was rebuilt on purpose" if endpoint.instance_id
                 else "If the instance was replaced at the same address")
        raise HostKeyChanged(
            f"The host key of {name} changed: {known} pins {pinned}, the machine offered {e.key.get_name()} "
            f"{_fingerprint(e.key)}. Nothing was sent to it. {cause}, forget the old key "
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


def _close_proxy(proxy: _ProxySocket | None) -> None:
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
                f"SSH to {_describe(endpoint)} did not come up in {deadline_s:.0f} s ({attempt} attempts). "
                f"Last error: {last}\nThe instance was left as it is. Check it is running and that its "
                "security group admits your address, then run the same command again to carry on."
            ) from last
        pause = min(delay, deadline_s - elapsed)
        if progress:
            progress(f"waiting for SSH on {_describe(endpoint)}: attempt {attempt} failed after "
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

    def __init__(self, client: paramiko.SSHClient, endpoint: SSHEndpoint, proxy: _ProxySocket | None):
        self._client, self._proxy, self.endpoint = client, proxy, endpoint
        self.where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
        self._forwarders: list[_UnixForwarder] = []

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
                    out += chan.recv(_BUF)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(_BUF)
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
        fwd = _UnixForwarder(self._open_channel, command)
        self._forwarders.append(fwd)
        return fwd.path

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


class LinkWatch:
    """While open, ask the session's machine for a reply every `period_s` (default `keepalive_s()`);
    when none comes in twice that, abort the session, so that a read or write blocked on a silently
    dead link fails at once and the caller's reconnect or resume path takes over.

        with LinkWatch(session) as link:
            ...      # a ConnectionLost out of here starts with the watch's reason when the watch cut it

    A session without `check_alive` (this machine) is not watched.
    """

    def __init__(self, session, period_s: float | None = None):
        self.session = session
        self.period_s = period_s if period_s is not None else keepalive_s()
        self.lost = threading.Event()
        self._stop = threading.Event()
        if callable(getattr(session, "check_alive", None)):
            threading.Thread(target=self._watch, name="orch-link-watch", daemon=True).start()

    @property
    def reason(self) -> str:
        return f"{self.session.where} gave no answer for {2 * self.period_s:.0f} s"

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.session.check_alive(timeout=2 * self.period_s) or self._stop.is_set():
                continue
            if not self.session.alive:  # closed, or dropped with a word: what was blocked has failed already
                return
            self.lost.set()
            self.session.abort()
            return

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> "LinkWatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if isinstance(exc, ConnectionLost) and self.lost.is_set():
            raise ConnectionLost(f"{self.reason}: the connection was dropped. {exc}") from exc


def openssh_command(endpoint: SSHEndpoint, extra: list[str]) -> list[str]:
    """The `ssh` command line that reaches the endpoint as orch does: its key, the host key orch
    pinned (under the instance id when there is one), its proxy command."""
    known = str(_known_hosts_path(endpoint))
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


class _UnixForwarder:
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
                while data := conn.recv(_BUF):
                    chan.sendall(data)
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                chan.close()

        up = threading.Thread(target=upstream, daemon=True)
        up.start()
        try:
            while data := chan.recv(_BUF):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        while chan.recv_stderr_ready():
            self.last_error = chan.recv_stderr(_BUF).decode(errors="replace")
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


# -- this machine -------------------------------------------------------------------------------------
class LocalStream:
    def __init__(self, cmd: str):
        self._proc = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self.stdin, self.stdout, self.stderr = self._proc.stdin, self._proc.stdout, self._proc.stderr

    def close_stdin(self) -> None:
        self.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"the local command did not finish in {timeout} s") from e

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for f in (self.stdin, self.stdout, self.stderr):
            try:
                f.close()
            except OSError:
                pass


class LocalFiles:
    """`Files` on this machine's filesystem. As over SFTP, a relative path is relative to the home folder."""

    @staticmethod
    def _path(path: str) -> str:
        return os.path.join(os.path.expanduser("~"), os.path.expanduser(path))

    def stat(self, path: str):
        return os.stat(self._path(path))

    def open(self, path: str, mode: str = "r"):
        return open(self._path(path), mode if "b" in mode else mode + "b")

    def listdir(self, path: str = ".") -> list[str]:
        return os.listdir(self._path(path))

    def remove(self, path: str) -> None:
        os.remove(self._path(path))

    def close(self) -> None:
        pass


class LocalSession:
    """The `Session` interface on this machine (the local target): commands run under bash."""

    where = "this machine"

    def run(self, cmd: str, check: bool = False, timeout: float | None = None) -> RunResult:
        try:
            p = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"`{cmd}` did not finish on this machine within {timeout} s") from e
        result = RunResult(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
        if check and p.returncode != 0:
            raise CommandFailed(self.where, cmd, result)
        return result

    def exec_stream(self, cmd: str) -> LocalStream:
        return LocalStream(cmd)

    def sftp(self) -> LocalFiles:
        return LocalFiles()

    def docker_socket(self, docker_host: str | None = None) -> str:
        """The local engine's socket: `docker_host`, else $DOCKER_HOST, else /var/run/docker.sock."""
        host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if not host.startswith("unix://"):
            raise RemoteError(f"only a unix-socket Docker engine is supported here, not {host}; "
                              "unset DOCKER_HOST or point it at unix:///var/run/docker.sock")
        return host[len("unix://"):]

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(endpoint: SSHEndpoint | None, deadline_s: float = 300.0) -> Session:
    """An `SSHSession` for an endpoint (waiting for SSH up to deadline_s), or a `LocalSession` for None."""
    if endpoint is None:
        return LocalSession()
    return wait_for_ssh(endpoint, deadline_s)
