"""`orch logs --follow` retries a dropped network for minutes, but a changed host key or an unusable
key file is no network drop: no retry can fix them, so following ends at once with their message."""
from __future__ import annotations

import time

import pytest

from orchestrator.job.logs import follow
from orchestrator.machines.instance import InstanceMachine
from orchestrator.remote.base import HostKeyChanged, KeyFileError
from orchestrator.remote.ssh import connect
from tests.fixtures.sshd import own_sshd, ssh_endpoint, ssh_key, sshd_server  # noqa: F401

pytestmark = pytest.mark.needs_sshd


@pytest.fixture(autouse=True)
def long_reconnect(monkeypatch):
    monkeypatch.setenv("ORCH_RECONNECT_S", "60")  # what a retried error would cost, at the least


def test_a_changed_host_key_ends_following_at_once(tmp_path):
    with own_sshd(tmp_path) as (server, key):
        endpoint = server.endpoint(key, tmp_path / "known_hosts")
        connect(endpoint).close()  # pinned
        server.rotate_host_key()
        started = time.monotonic()
        with pytest.raises(HostKeyChanged, match="ssh-keygen -R"):
            follow(InstanceMachine("r50", endpoint), follow=True)
        assert time.monotonic() - started < 15


def test_a_key_file_readable_by_others_ends_following_at_once(ssh_endpoint):
    ssh_endpoint.key_path.chmod(0o644)
    started = time.monotonic()
    with pytest.raises(KeyFileError, match="chmod 600"):
        follow(InstanceMachine("r50", ssh_endpoint), follow=True)
    assert time.monotonic() - started < 15
