"""What every session offers, SSH or this machine: run a command, stream one, move files; and the errors.

Callers (job/, machines/) are written against `Session`; `remote/ssh.py` and `remote/local.py` implement it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Protocol

import paramiko

# What a dropped connection raises from paramiko or a pipe; callers turn it into ConnectionLost.
TRANSPORT_ERRORS = (OSError, EOFError, paramiko.SSHException)

BUF_BYTES = 1 << 16  # bytes per read or write when pumping a stream
KEEPALIVE_S = 15  # a NAT or bastion that drops idle flows usually waits minutes; this is well inside
BUF_BYTES = 1 << 16


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



def keepalive_s() -> float:
    """Seconds between keepalives and liveness checks: $ORCH_KEEPALIVE_S, else KEEPALIVE_S."""
    try:
        return max(0.1, float(os.environ.get("ORCH_KEEPALIVE_S") or KEEPALIVE_S))
    except ValueError:
        return float(KEEPALIVE_S)
