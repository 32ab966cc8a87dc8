"""The `Session` interface on this machine: what the local machines (machines/local_*.py) run commands and move files with."""
from __future__ import annotations

import os
import subprocess

from orchestrator.remote.base import CommandFailed, RemoteError, RunResult


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
