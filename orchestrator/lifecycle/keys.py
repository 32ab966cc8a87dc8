"""The job's SSH key pair (private key mode 600 on this machine), the caller's address, and pinned host keys."""
from __future__ import annotations

import ipaddress
import os
import urllib.request
from pathlib import Path

from orchestrator.cloud import aws, network
from orchestrator.config import orch_home
from orchestrator.errors import FlowError
from orchestrator.files import write_atomic
from orchestrator.paths import key_path, known_hosts_path

IP_ECHO_URL = "https://checkip.amazonaws.com"


def write_private_file(path: Path, text: str) -> None:
    """A secret file (a private key, pinned host keys): atomic, mode 600, in a mode-700 folder."""
    write_atomic(path, text if text.endswith("\n") else text + "\n", private_dir=True)


# --- caller address ---------------------------------------------------------------------------


def caller_cidr(timeout_s: float = 4.0) -> str:
    """This machine's public IPv4 address as a /32, asked of an HTTPS echo service."""
    try:
        with urllib.request.urlopen(IP_ECHO_URL, timeout=timeout_s) as response:
            text = response.read(64).decode().strip()
        return f"{ipaddress.IPv4Address(text)}/32"
    except Exception as e:
        raise FlowError(
            f"Could not detect your public IP address ({IP_ECHO_URL}: {e}). SSH is only opened to "
            "your own address: pass it with --ssh-cidr YOUR.IP.ADDRESS/32 (or set ssh_cidr in "
            f"{orch_home() / 'config.toml'})."
        ) from None



def ensure_key(region: str, job: str, in_use: bool) -> network.KeyPairInfo:
    """The job's key pair with its private key on disk (mode 600); created when missing."""
    path = key_path(job)
    existing = network.find_key_pair(region, job)
    if path.exists() and (existing or in_use):
        # A running instance keeps its public key even if the key pair object was deleted.
        os.chmod(path, 0o600)
        return existing or network.KeyPairInfo(aws.resource_name(job), None, False)
    if in_use:
        raise FlowError(
            f"The job's instance exists but its private key {path} is missing, so it can't be "
            f"reached. Remove it with `orch teardown {job}` and launch again."
        )
    if existing:  # a key pair whose private key is lost, and no instance uses it: replace it
        network.delete_key_pair(region, existing)
    info, material = network.create_key_pair(region, job)
    write_private_file(path, material)
    return info



def forget_host_keys(hosts: set[str]) -> None:
    """Drop pinned host keys of terminated instances: AWS reuses addresses for other machines."""
    path = known_hosts_path()
    if not hosts or not path.exists():
        return
    def names(line: str) -> set[str]:
        field = line.split(" ", 1)[0]
        return {n.split("]:")[0].lstrip("[") for n in field.split(",")}
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not (names(line) & hosts)]
    if len(kept) != len(lines):
        write_private_file(path, "\n".join(kept))
