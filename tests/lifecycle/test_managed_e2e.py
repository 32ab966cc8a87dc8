"""A managed spot job end to end (issue 24): `orch launch --managed` returns, and from then on no orch command acts on
the job until it is over (one follows its logs). AWS (moto's Auto Scaling and EC2) starts the group's instance; the instance sets itself up
from the bucket alone; AWS reclaims it mid-run and the group starts a replacement, which restores the newest
checkpoint from the bucket and finishes the run, with the same epochs and learning rates as a run never stopped;
`orch logs --follow`, started on the first instance, goes on on the replacement with no line lost or repeated.
The finished job sets its group to 0 instances and is not replaced; teardown leaves nothing tagged.

What stands in for AWS's side of an instance (the "boot" below): cloud-init running the launch template's user
data (infra/bootstrap.sh with the launch's settings) in its `watch` and `start` steps, on this machine, with the
test Docker engine as the instance's, the loopback sshd as its SSH server (reached through the proxy command), a
folder per instance as its disk, and `aws ec2 terminate-instances` (the real AWS CLI, against moto) as its
shutdown (instances are launched with shutdown behaviour "terminate"). orch's package is downloaded from moto's S3
and checked against the hash in the user data; it runs with this test's Python (ORCH_PYTHON) rather than a venv
installed from PyPI, which the tests can't reach. moto can't show capacity rebalancing or a real reclaim notice:
the reclaim here is a termination, as AWS's two-minute notice ends.
"""
from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from orchestrator.machines import docker_runner as ctr
from tests.fixtures.aws import REGION, aws, moto_url, orch, tagged  # noqa: F401 (fixtures)
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import sshd_server  # noqa: F401 (fixture)
from tests.lifecycle.test_e2e import CIDR, TINY, instance, job_name  # noqa: F401 (fixture)

pytestmark = [pytest.mark.needs_docker, pytest.mark.needs_sshd]

EPOCHS = 6
CKPT_BUCKET = "orch-test-ckpt"


class Cloud:
    """AWS's side of the group's instances: each is "booted" by running its user data's steps here."""

    def __init__(self, job: str, root: Path, engine_url: str, user: str):
        self.job, self.root, self.engine_url, self.user = job, root, engine_url, user
        self.home = Path(pwd.getpwnam(user).pw_dir)
        self.watchers: dict[str, subprocess.Popen] = {}
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.scaling = boto3.client("autoscaling", region_name=REGION)

    def group(self) -> dict:
        return self.scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"orch-{self.job}"])[
            "AutoScalingGroups"][0]

    def current(self) -> str:
        """The group's instance now (describing the group is when moto replaces a lost one)."""
        (only,) = [i["InstanceId"] for i in self.group()["Instances"]]
        return only

    def user_data(self) -> str:
        template = self.group()["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
        data = self.ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"],
                                                          Versions=["$Latest"])["LaunchTemplateVersions"][0]
        return base64.b64decode(data["LaunchTemplateData"]["UserData"]).decode()

    def boot(self, instance_id: str) -> None:
        """cloud-init on a new instance: the watcher service, then the job started from the bucket."""
        disk = self.root / instance_id
        disk.mkdir(parents=True)
        script = disk / "user-data.sh"
        script.write_text(self.user_data())
        env = {**os.environ, "HOME": str(self.home), "DOCKER_HOST": self.engine_url, "ORCH_USER": self.user,
               "ORCH_STATE_DIR": str(disk / "state"), "ORCH_LOG": str(disk / "boot.log"),
               "ORCH_PACKAGE_DIR": str(disk / "opt-orch"), "ORCH_PYTHON": sys.executable, "ORCH_RETRY_S": "1",
               "ORCH_WATCH_INTERVAL_S": "1", "AWS_DEFAULT_REGION": REGION,
               "ORCH_SHUTDOWN_CMD": f"aws ec2 terminate-instances --instance-ids {instance_id} --output text"}
        self.watchers[instance_id] = subprocess.Popen(["bash", str(script), "watch"], env=env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True, text=True,
                                 timeout=900)
        assert started.returncode == 0, self.log(instance_id)
        assert f"job {self.job} started from s3://{CKPT_BUCKET}/runs/orch-jobs/{self.job}/spec.json" in \
            self.log(instance_id)

    def lose(self, instance_id: str, client) -> None:
        """A spot reclaim: the machine, its container and its disk are gone; EC2 says terminated."""
        self.watchers.pop(instance_id).kill()
        ctr.remove(client, self.job, timeout_s=1)
        shutil.rmtree(self.home / "orch" / self.job)
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def log(self, instance_id: str) -> str:
        path = self.root / instance_id / "boot.log"
        return path.read_text() if path.exists() else "(no boot log)"

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.kill()
            watcher.wait()


def bucket_has(key: str) -> bool:
    found = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=CKPT_BUCKET, Prefix=key).get("Contents", [])
    return any(o["Key"] == key for o in found)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def uninterrupted_learning_rates(tmp_path: Path) -> list[tuple[int, float]]:
    """The same run never stopped, on this machine: its (epoch, lr) per epoch."""
    data, out = tmp_path / "demo", tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(data)], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "trainer", "train", "--data", str(data), "--out", str(out), *TINY,
                    "--batch-size", "8", "--epochs", str(EPOCHS)], check=True, capture_output=True, timeout=600)
    return [(r["epoch"], round(r["lr"], 9)) for r in rows(out / "metrics.jsonl")]


def test_a_reclaimed_managed_job_is_replaced_and_finishes_with_no_orch_running_and_is_not_replaced_once_done(
        instance, orch, aws, docker_engine, sshd_server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the real infra/bootstrap.sh is the user data
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=CKPT_BUCKET)
    job = job_name("managed")
    instance.append(job)
    cloud = Cloud(job, tmp_path / "instances", docker_engine.base_url, sshd_server.user)
    client = docker_engine.client()
    outputs = cloud.home / "orch" / job / "outputs"
    follower = None
    try:
        r = orch("launch", "--managed", "--spot", "--instance", "g4dn.xlarge,g5.xlarge", "--name", job,
                 "--checkpoint-bucket", f"s3://{CKPT_BUCKET}/runs", "--iam-instance-profile", "orch-trainer",
                 "--ssh-cidr", CIDR, "--no-gpus", "--autostop-minutes", "1", "--data", "demo", "--",
                 *TINY, "--batch-size", "8", "--epochs", str(EPOCHS))
        assert r.exit_code == 0, r.output
        assert ctr.find(client, job) is None  # the laptop started nothing: the instance does

        first = cloud.current()
        cloud.boot(first)
        container = ctr.find(client, job)
        assert container is not None
        # The laptop follows the job (the real `orch` command): across the reclaim, from one instance to the next.
        follower = subprocess.Popen([str(Path(sys.executable).with_name("orch")), "logs", job, "--follow"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not (outputs / "checkpoints" / "last.pt.sha256").exists():
            assert time.monotonic() < deadline, cloud.log(first)
            time.sleep(0.1)
        container.pause()  # mid-run, whatever this machine's speed
        done = len(rows(outputs / "metrics.jsonl"))
        assert done < EPOCHS
        while not bucket_has(f"runs/{job}/last.pt.sha256"):  # the watcher's copy
            assert time.monotonic() < deadline, cloud.log(first)
            time.sleep(0.2)

        cloud.lose(first, client)  # AWS reclaims it; no orch command acts on the job from here on
        second = cloud.current()
        assert second != first
        cloud.boot(second)
        assert "continuing from" in cloud.log(second) and "no checkpoint" not in cloud.log(second)

        followed, said = follower.communicate(timeout=600)
        assert follower.returncode == 0, said[-3000:] + cloud.log(second)
        assert "AWS is replacing the instance" in said
        for epoch in range(1, EPOCHS + 1):  # each line once: none lost, none repeated
            assert followed.count(f"epoch {epoch}/{EPOCHS} lr") == 1, (epoch, followed[-3000:])
        assert "resumed from" in (outputs / "train.log").read_text()
        got = [(m["epoch"], round(m["lr"], 9)) for m in rows(outputs / "metrics.jsonl")]
        assert [e for e, _ in got] == list(range(1, EPOCHS + 1))  # each epoch once
        assert got == uninterrupted_learning_rates(tmp_path)  # the schedule went on where it stopped

        # Finished: the watcher waits out autostop (1 min), sets the group to 0 and shuts the instance down.
        deadline = time.monotonic() + 180
        while "set to 0 instances: this one is not replaced" not in cloud.log(second) or tagged(job)["instances"]:
            assert time.monotonic() < deadline, cloud.log(second)
            time.sleep(1)
        assert cloud.group()["DesiredCapacity"] == 0
        assert cloud.group()["Instances"] == [] and tagged(job)["instances"] == []  # and nothing replaces it
        r = orch("status", job)
        assert "The job ended on purpose" in r.output, r.output
        r = orch("fetch-weights", job, "--which", "last", "--dest", str(tmp_path / "weights"))  # none up: the bucket
        assert r.exit_code == 0 and "from its checkpoint bucket" in r.output and "(sha256 ok)" in r.output, r.output
        assert rows(tmp_path / "weights" / "metrics.jsonl") == rows(outputs / "metrics.jsonl")

        r = orch("teardown", job, "--yes")
        assert r.exit_code == 0, r.output
        assert tagged(job) == {"instances": [], "security_groups": [], "key_pairs": [], "volumes": []}
        assert cloud.scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[f"orch-{job}"])[
            "AutoScalingGroups"] == []
        assert cloud.ec2.describe_launch_templates(Filters=[{"Name": "tag:orch:job", "Values": [job]}])[
            "LaunchTemplates"] == []
        assert not bucket_has(f"runs/orch-jobs/{job}/spec.json") and bucket_has(f"runs/{job}/last.pt")
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
        cloud.stop()
        client.close()
