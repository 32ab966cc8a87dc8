"""A managed job's instance starts the job from the bucket alone (issue 24's instance half): no `orch` runs on the
laptop. `python -m orchestrator.lifecycle.self_start s3://.../spec.json` is what each instance of the job's Auto
Scaling group will run at boot; here it runs on this machine, as an instance would, with the test Docker engine as
the instance's. A first instance trains and is lost mid-run; its checkpoint is in the bucket (where infra/
bootstrap.sh's watcher copies it); a replacement with an empty disk restores it from there and the run ends with
every epoch logged once.

Real: the trainer image and container, the AWS CLI (`aws s3 cp`) against moto's S3. The whole flow, with the Auto
Scaling group starting the replacement and infra/bootstrap.sh running this at its boot, is
tests/lifecycle/test_managed_e2e.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from orchestrator.job import spec_file
from orchestrator.machines import docker_runner as ctr
from orchestrator.records import JobSpec, Restore
from tests.fixtures.aws import REGION, aws, moto_url  # noqa: F401 (fixtures)
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)

TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--batch-size", "8")
EPOCHS = 4


def self_start(uri: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.lifecycle.self_start", uri], capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.mark.needs_docker
def test_a_replacement_instance_sets_the_job_up_from_the_bucket_and_the_run_continues(
        aws, docker_engine, base_image, tmp_path):  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("orch-test-jobs", "orch-test-ckpt"):
        s3.create_bucket(Bucket=bucket)
    job = f"managed-{uuid.uuid4().hex[:8]}"
    disk = tmp_path / "disk"  # the instance's job folders: a replacement's is empty
    spec = JobSpec(job=job, data="demo", trainer_args=(*TINY, "--epochs", str(EPOCHS)), gpus=False,
                   remote_root=str(disk), restore=Restore(bucket="s3://orch-test-ckpt/runs"))
    uri = spec_file.spec_uri("s3://orch-test-jobs", job)
    s3.put_object(Bucket="orch-test-jobs", Key=f"orch-jobs/{job}/spec.json", Body=spec_file.dumps(spec, REGION))
    env = {**os.environ, "ORCH_REGION": REGION, "DOCKER_HOST": docker_engine.base_url, "ORCH_BASE_IMAGE": base_image}
    client = docker_engine.client()
    outputs = disk / job / "outputs"
    try:
        first = self_start(uri, env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "no checkpoint in s3://orch-test-ckpt/runs yet: the trainer starts from scratch" in first.stderr
        container = ctr.find(client, job)
        assert container is not None and container.labels["orch.job"] == job

        # Lost mid-run, once its last.pt is written and copied to the bucket (what the watcher does).
        deadline = time.monotonic() + 300
        while not (outputs / "checkpoints" / "last.pt.sha256").exists() or len(metrics(outputs)) < 1:
            assert time.monotonic() < deadline, first.stderr[-2000:]
            time.sleep(0.2)
        container.pause()
        done = metrics(outputs)
        assert len(done) < EPOCHS
        for name in ("last.pt", "last.pt.sha256", "metrics.jsonl"):
            src = outputs / ("checkpoints/" + name if name.startswith("last") else name)
            s3.upload_file(str(src), "orch-test-ckpt", f"runs/{job}/{name}")
        container.remove(force=True)
        shutil.rmtree(disk)  # a new instance: an empty disk, no container

        second = self_start(uri, env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "continuing from" in second.stderr, second.stderr[-2000:]
        container = ctr.find(client, job)
        assert container.wait(timeout=600)["StatusCode"] == 0, container.logs()[-3000:].decode()
        assert [m["epoch"] for m in metrics(outputs)] == list(range(1, EPOCHS + 1))  # each once, none lost
        assert "resumed from" in (outputs / "train.log").read_text()
    finally:
        if (found := ctr.find(client, job)) is not None:
            found.remove(force=True)
        client.close()


def metrics(outputs: Path) -> list[dict]:
    path = outputs / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
