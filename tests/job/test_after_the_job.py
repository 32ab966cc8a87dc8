"""When `orch logs --follow` sees an instance's job end, it says where the weights are and that autostop
will terminate the instance (and its disks) N minutes later: fetch them now.

Through the CLI: moto for EC2, the real sshd behind the proxy command, and the test dockerd as the
instance's engine (as in test_e2e.py); the ended job's container is made directly on the engine.
"""
from __future__ import annotations

import shutil
import uuid

import pytest

from orchestrator.records import JobEnded
from orchestrator.labels import LABEL_AUTOSTOP, LABEL_JOB, LABEL_OUTPUTS, container_name
from orchestrator.job.ended import after_the_job
from orchestrator.machines import docker_runner as ctr
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import authorize_new_key_pairs, sshd_server  # noqa: F401 (fixture)
from tests.fixtures.aws import aws, moto_url, orch  # noqa: F401 (fixtures)

CIDR = "198.51.100.7/32"


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_logs_follow_on_an_instance_ends_with_where_the_weights_are_and_when_autostop_comes(
        aws, orch, sshd_server, docker_engine, base_image, monkeypatch):  # noqa: F811
    wrapper = sshd_server.bin_dir / "docker"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {docker_engine.base_url} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", sshd_server.proxy_command)
    monkeypatch.setenv("ORCH_SSH_USER", sshd_server.user)
    authorized = authorize_new_key_pairs(monkeypatch, sshd_server)
    client = docker_engine.client()
    job = f"after-{uuid.uuid4().hex[:8]}"
    try:
        r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--ssh-cidr", CIDR)
        assert r.exit_code == 0, r.output
        outputs = f"/mnt/orch/{job}/outputs"
        client.containers.run(base_image, ["sh", "-c", "echo epoch 3/3 val_top1 0.61"], detach=True,
                              name=container_name(job), network_mode="none",
                              labels={LABEL_JOB: job, LABEL_OUTPUTS: outputs, LABEL_AUTOSTOP: "45"})
        ctr.wait_state(client, job, {"exited"}, timeout_s=60)

        r = orch("logs", job, "--follow")
        assert r.exit_code == 0, r.output
        assert "epoch 3/3 val_top1 0.61" in r.stdout and "fetch-weights" not in r.stdout  # the log stays clean
        note = r.stderr
        assert f"Run `orch fetch-weights {job}` now" in note, note
        assert f"on the instance, in {outputs}" in note
        assert "terminates the instance 45 minutes after the job ended" in note and "disks" in note

        r = orch("logs", job)  # not following: just the log
        assert r.exit_code == 0 and "fetch-weights" not in r.output
    finally:
        ctr.remove(client, job, timeout_s=1)
        client.close()
        for public in authorized:
            sshd_server.revoke(public)
        wrapper.unlink(missing_ok=True)


def test_what_is_said_depends_on_what_outlives_the_instance():
    ended = JobEnded(job="r50", exit_code=0, finished_at="2026-01-31T08:00:01.5Z",
                             outputs="/mnt/orch/r50/outputs", autostop_minutes=30)
    plain = after_the_job(ended)
    assert "ended at 08:00 UTC (exit code 0)" in plain and "(about 08:30 UTC)" in plain
    assert "and its disks with it, weights included" in plain and plain.endswith("Run `orch fetch-weights r50` now.")
    bucket = after_the_job(ended, checkpoint_bucket="s3://b/ckpt")
    assert "the checkpoints are also copied to s3://b/ckpt" in bucket and "weights included" not in bucket
    kept = after_the_job(ended, keep_volume=True)
    assert "root volume with the outputs is kept" in kept and "orch teardown r50" in kept
    off = after_the_job(JobEnded(job="r50", exit_code=1, autostop_minutes=0))
    assert "Autostop is off" in off and "orch fetch-weights r50" in off
    unknown = after_the_job(JobEnded(job="r50", exit_code=0, finished_at="0001-01-01T00:00:00Z"))
    assert "--autostop-minutes (30 by default) after the job ended" in unknown and " at " not in unknown.split(".")[0]
