"""The trainer image kept in the account's registry: the first machine builds it and pushes it (in the
background, with its own credentials), the next one pulls it instead of building, and a machine whose role
can't reach the registry builds as before and says why. Real parts: the loopback sshd as the instance, the
test dockerd as its engine, Debian's docker-registry on loopback as ECR's registry. Stand-ins: the
instance's `aws` command (its role's login token), and a tiny build context (busybox) for the image.
"""
from __future__ import annotations

import pwd
import time
from pathlib import Path

import pytest

from orchestrator.machines import docker_runner as ctr
from orchestrator.machines.registry import PullProgress
from orchestrator.records import ImageRegistry, JobSpec
from tests.fixtures.dockerd import docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.registry import loopback_registry  # noqa: F401 (fixtures)
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)
from tests.fixtures.tiny_instance import instance, tiny_base, tiny_context  # noqa: F401 (fixtures)
from tests.machines.test_start_on_instance import new_job, start_on, tiny_dataset

pytestmark = [pytest.mark.needs_docker, pytest.mark.needs_sshd]

AWS_WITH_ROLE = '#!/bin/sh\n[ "$1 $2" = "ecr get-login-password" ] && { echo orch-test-token; exit 0; }\nexit 2\n'
AWS_WITHOUT = ("#!/bin/sh\necho 'An error occurred (AccessDeniedException) when calling the GetAuthorizationToken "
               "operation: User is not authorized to perform: ecr:GetAuthorizationToken' >&2\nexit 254\n")


def stand_in_aws(sshd_server, script: str) -> Path:  # noqa: F811
    path = sshd_server.bin_dir / "aws"
    path.write_text(script)
    path.chmod(0o755)
    return path


def push_log(sshd_server) -> Path:  # noqa: F811
    return Path(pwd.getpwnam(sshd_server.user).pw_dir) / "orch" / "image-push.log"


def test_the_image_is_built_once_pushed_and_the_next_machine_pulls_it(instance, sshd_server, loopback_registry,  # noqa: F811
                                                                      tiny_context, tmp_path):
    session, client, jobs = instance
    tag, h = tiny_context
    registry = ImageRegistry(f"{loopback_registry.host}/orch-trainer", "us-east-1")
    aws = stand_in_aws(sshd_server, AWS_WITH_ROLE)
    push_log(sshd_server).unlink(missing_ok=True)
    try:
        first: list[str] = []
        spec = JobSpec(job=new_job(jobs, "built"), data=str(tiny_dataset(tmp_path / "data")), gpus=False,
                       remote_root=str(tmp_path / "root"), registry=registry)
        start_on(session, spec, say=first.append)
        text = "\n".join(first)
        assert "not in the registry yet" in text and "building the trainer image" in text and f"{tag}: built" in text
        assert f"pushing it to {registry.repository}:{h} in the background" in text
        deadline = time.monotonic() + 120
        while h not in loopback_registry.tags("orch-trainer"):
            assert time.monotonic() < deadline, push_log(sshd_server).read_text(errors="replace")
            time.sleep(0.5)
        assert "orch-test-token" not in text + push_log(sshd_server).read_text()

        # A new machine: the engine has never seen the image.
        ctr.remove(client, spec.job, timeout_s=1)
        client.images.remove(tag, force=True)
        client.images.remove(f"{registry.repository}:{h}", force=True)
        second: list[str] = []
        start_on(session, JobSpec(job=new_job(jobs, "pulled"), data=str(tiny_dataset(tmp_path / "data2")),
                                  gpus=False, remote_root=str(tmp_path / "root"), registry=registry), say=second.append)
        text = "\n".join(second)
        assert f"pulling the trainer image {registry.repository}:{h}" in text and f"{tag}: pulled (image: " in text
        assert "building" not in text and "pushing" not in text
        assert client.images.get(tag).labels["orch.image-hash"] == h
        third: list[str] = []  # the same machine again: nothing to fetch
        start_on(session, JobSpec(job=new_job(jobs, "found"), data=str(tiny_dataset(tmp_path / "data3")),
                                  gpus=False, remote_root=str(tmp_path / "root"), registry=registry), say=third.append)
        assert f"trainer image {tag} is on" in "\n".join(third)
    finally:
        aws.unlink()


def test_a_machine_whose_role_cannot_reach_the_registry_builds_and_says_why(instance, sshd_server, loopback_registry,  # noqa: F811
                                                                           tiny_context, tmp_path):
    session, client, jobs = instance
    tag, h = tiny_context
    registry = ImageRegistry(f"{loopback_registry.host}/orch-trainer", "us-east-1")
    aws = stand_in_aws(sshd_server, AWS_WITHOUT)
    try:
        said: list[str] = []
        start_on(session, JobSpec(job=new_job(jobs, "norole"), data=str(tiny_dataset(tmp_path / "data")), gpus=False,
                                  remote_root=str(tmp_path / "root"), registry=registry), say=said.append)
    finally:
        aws.unlink()
    text = "\n".join(said)
    assert (f"the trainer image can't be kept in {registry.repository} (An error occurred (AccessDeniedException) "
            "when calling the GetAuthorizationToken operation") in text
    assert "`orch init` gives the instance role what ECR needs" in text and f"{tag}: built" in text
    assert "pushing" not in text and h not in loopback_registry.tags("orch-trainer")


def test_pull_progress_sums_the_layers_into_bytes_rate_and_time_left():
    said: list[str] = []
    now = [0.0]
    progress = PullProgress(said.append, every_s=5, clock=lambda: now[0])
    progress.update({"status": "Pulling from orch-trainer", "id": "abc:1"})
    progress.update({"status": "Pulling fs layer", "id": "l1"})
    progress.update({"status": "Downloading", "id": "l1", "progressDetail": {"current": 1_000_000_000, "total": 3_000_000_000}})
    progress.update({"status": "Downloading", "id": "l2", "progressDetail": {"current": 0, "total": 1_000_000_000}})
    assert said == []
    now[0] = 10.0
    progress.update({"status": "Download complete", "id": "l2"})
    assert said == ["    image: 2.00 GB of 4.00 GB pulled (200 MB/s, 2 layers), about 10 s left"]
    # What a broken engine or registry might send is ignored, never raised (a pull that works goes on).
    for odd in (None, "text", {"id": 5}, {"id": ["a"]}, {"id": "l3", "status": "Downloading", "progressDetail": "50%"},
                {"id": "l3", "status": "Downloading", "progressDetail": {"current": "abc", "total": 10}},
                {"id": "l3", "status": "Downloading", "progressDetail": {"current": 1, "total": float("inf")}},
                {"id": "l3", "status": "Downloading", "progressDetail": {"current": -5, "total": -10}}):
        progress.update(odd)
    assert set(progress.layers) == {"l1", "l2"}
