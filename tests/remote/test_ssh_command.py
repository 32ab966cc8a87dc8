"""`orch ssh`'s command line, run by the real OpenSSH client against the test sshd: it uses the host key
orch pinned (under the instance id when there is one), from a known_hosts whose path has a space
(macOS's ~/Library/Application Support/orch), and the proxy command with %i expanded."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import pytest

from orchestrator.remote.proxy import openssh_command as ssh_command
from orchestrator.remote.ssh import connect
from tests.conftest import require
from tests.fixtures.sshd import own_sshd

pytestmark = pytest.mark.needs_sshd


def run_ssh(endpoint, *command: str) -> subprocess.CompletedProcess:
    args = ssh_command(endpoint, list(command))
    args.insert(1, "-oBatchMode=yes")  # never ask
    return subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("instance_id", [None, "i-0123456789abcdef0"])
def test_orch_ssh_checks_the_key_orch_pinned_in_a_folder_with_a_space(tmp_path, instance_id):
    require(shutil.which("ssh") is not None, "no OpenSSH client (ssh) here")
    with own_sshd(tmp_path) as (server, key):
        home = tmp_path / "Library" / "Application Support" / "orch"
        home.mkdir(parents=True)
        known = home / "known_hosts"
        endpoint = server.endpoint(key, known)
        if instance_id:
            endpoint = replace(endpoint, instance_id=instance_id,
                               proxy_command=server.proxy_command.replace(" %h %p", " %i %p"))
        connect(endpoint).close()  # orch pins the key first
        pinned = known.read_text()

        r = run_ssh(endpoint, "echo", "via-ssh")
        assert r.returncode == 0 and r.stdout.strip() == "via-ssh", r.stderr
        assert known.read_text() == pinned  # ssh found orch's pin: it added nothing
        assert sorted(p.name for p in (tmp_path / "Library").iterdir()) == ["Application Support"]  # no stray file
        if instance_id:
            assert f"{instance_id} 22" in server.requested_targets()  # %i expanded for ssh too

        server.rotate_host_key()
        r = run_ssh(endpoint, "echo", "via-ssh")
        assert r.returncode == 255 and "via-ssh" not in r.stdout
        assert "Host key verification failed" in r.stderr
