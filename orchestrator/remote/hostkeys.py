"""Host keys pinned on first use (under the instance id when known) and the private key checks."""
from __future__ import annotations

import base64
import hashlib
import os
import shlex
import tempfile
from pathlib import Path

import paramiko

from orchestrator.config import orch_home
from orchestrator.files import write_atomic
from orchestrator.records import SSHEndpoint
from orchestrator.remote.base import KeyFileError


# -- host keys and keys ---------------------------------------------------------------------------
def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_file(endpoint: SSHEndpoint) -> Path:
    if endpoint.known_hosts is not None:
        return Path(endpoint.known_hosts)
    return orch_home() / "known_hosts"




def address_name(endpoint: SSHEndpoint) -> str:
    return endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"


def host_key_name(endpoint: SSHEndpoint) -> str:
    """The name a machine's key is pinned under: its instance id when known, else its address.

    An instance id names one machine for its life, while AWS hands a terminated instance's address
    to the next one (and an SSM proxy never sees an address at all).
    """
    return endpoint.instance_id or address_name(endpoint)


def load_host_keys(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    return keys


class PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Record an unknown host's key in our known_hosts under `name` (mode 600, atomic); never ask."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def missing_host_key(self, client, hostname, key):
        keys = load_host_keys(self.path)
        keys.add(self.name, key.get_name(), key)
        with tempfile.TemporaryDirectory() as scratch:  # paramiko writes only to a path: render there
            keys.save(os.path.join(scratch, "known_hosts"))
            text = Path(scratch, "known_hosts").read_bytes()
        write_atomic(self.path, text)


def load_key(path: Path | None) -> paramiko.PKey | None:
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
