"""A spot job reclaimed mid-run comes back from its checkpoint, and a full disk during the sync is
reported and resumable: all through the `orch` CLI.

Real here: the `orch` CLI, OpenSSH (the "instance", reached through the proxy command), a Docker
engine running the trainer image, the trainer, a tmpfs that really fills. Emulated: EC2 (moto),
AWS's spot reclaim (the `Edge` makes terminated instances report Server.SpotInstanceTermination),
the checkpoint bucket (a fake `aws` on the instance's PATH over a local folder, standing for what
infra/bootstrap.sh's watcher copies there), and what a new instance is: every RunInstances gives
the job an empty disk and no container (the loopback sshd is the same machine each time).

Determinism: the trainer is frozen (`docker pause`) once a checkpoint is on disk and verifies, so
the interruption always lands mid-run, after a known epoch; nothing waits on the wall clock.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest

from orchestrator.machines import docker_runner as ctr
from orchestrator.cloud import instances as cloud_instances
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import authorize_new_key_pairs, ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)
from tests.fixtures.aws import REGION, aws, job_calls, moto_url, orch, tagged  # noqa: F401 (fixtures)
from tests.reliability.conftest import metrics, no_traceback, sha_ok, tmpfs

CIDR = "198.51.100.7/32"
# Epochs of a dozen steps each, and six of them: once the trainer is frozen after its first
# checkpoint, most of the run is still ahead (the freeze is checked to land mid-run, not timed).
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--batch-size", "8")
EPOCHS = 6
BUCKET = "s3://orch-test-ckpt/runs"
PROFILE = "orch-trainer"  # the instance copies to the bucket with its role
LOCAL_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAORCHRESUMELOCAL1",
    "AWS_SECRET_ACCESS_KEY": "orch-resume-local-secret-8c1e5a",
    "AWS_SESSION_TOKEN": "orch-resume-local-session-token-41b7",
}

FAKE_AWS = """#!/bin/sh
# The AWS CLI on the instance, over a local folder standing for S3: `aws s3 cp s3://KEY DEST ...`.
{{ echo "ARGS: $*"; env | sed 's/^/ENV: /'; }} >> {record}
[ "$1 $2" = "s3 cp" ] || {{ echo "fake aws: only s3 cp" >&2; exit 2; }}
key="${{3#s3://}}"
if [ ! -f "{bucket_root}/$key" ]; then
    echo "fatal error: An error occurred (404) when calling the HeadObject operation: Key \\"$key\\" does not exist" >&2
    exit 1
fi
mkdir -p "$(dirname "$4")" && cp "{bucket_root}/$key" "$4"
"""


def instance_profile() -> None:
    """The instance profile a checkpoint bucket needs (moto checks that it exists)."""
    iam = boto3.client("iam", region_name=REGION)
    if not any(p["InstanceProfileName"] == PROFILE for p in iam.list_instance_profiles()["InstanceProfiles"]):
        iam.create_instance_profile(InstanceProfileName=PROFILE)


def job_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def make_dataset(dest: Path, classes: int = 3, per_class: int = 32) -> Path:
    subprocess.run([sys.executable, "-m", "trainer", "demo-data", "--dest", str(dest), "--classes", str(classes),
                    "--per-class", str(per_class), "--size", "32"], check=True, capture_output=True)
    return dest


class Machine:
    """The job's machine as the tests see it: its job folders, its engine, the fake bucket."""

    def __init__(self, root: Path, engine, bucket_root: Path, aws_record: Path):
        self.root, self.engine, self.bucket_root, self.aws_record = root, engine, bucket_root, aws_record
        self.jobs: list[str] = []  # cleaned up after the test

    def outputs(self, job: str) -> Path:
        return self.root / job / "outputs"

    def container(self, job: str):
        client = self.engine.client()
        try:
            return ctr.find(client, job)
        finally:
            client.close()

    def wipe(self, job: str) -> None:
        """A new instance: no container, an empty disk."""
        client = self.engine.client()
        try:
            ctr.remove(client, job, timeout_s=1)
        finally:
            client.close()
        shutil.rmtree(self.root / job, ignore_errors=True)

    def aws_calls(self) -> str:
        return self.aws_record.read_text() if self.aws_record.exists() else ""


@pytest.fixture
def machine(aws, sshd_server, docker_engine, base_image, monkeypatch, tmp_path):  # noqa: F811
    """moto's instances are all "reached" at the loopback sshd; the job root is a test folder there."""
    for name, value in LOCAL_SECRETS.items():  # what must never reach the instance
        monkeypatch.setenv(name, value)
    wrapper = sshd_server.bin_dir / "docker"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('docker')} -H {docker_engine.base_url} \"$@\"\n")
    wrapper.chmod(0o755)
    root = tmp_path / "machine"
    bucket_root, record = tmp_path / "bucket", tmp_path / "aws-calls.txt"
    fake_aws = sshd_server.bin_dir / "aws"
    fake_aws.write_text(FAKE_AWS.format(record=record, bucket_root=bucket_root))
    fake_aws.chmod(0o755)
    monkeypatch.setenv("ORCH_SSH_PROXY_COMMAND", sshd_server.proxy_command)
    monkeypatch.setenv("ORCH_SSH_USER", sshd_server.user)
    monkeypatch.setenv("ORCH_SSH_CIDR", CIDR)
    monkeypatch.setenv("ORCH_BASE_IMAGE", base_image)
    monkeypatch.setenv("ORCH_RECONNECT_S", "60")
    monkeypatch.setenv("ORCH_REMOTE_ROOT", str(root))
    m = Machine(root, docker_engine, bucket_root, record)
    instance_profile()

    run_instance = cloud_instances.run_instance

    def new_instance(plan, security_group_id, log=lambda _: None, **options):
        m.wipe(plan.job)
        return run_instance(plan, security_group_id, log, **options)

    monkeypatch.setattr(cloud_instances, "run_instance", new_instance)
    authorized = authorize_new_key_pairs(monkeypatch, sshd_server)
    yield m
    for job in m.jobs:
        m.wipe(job)
    for public in authorized:
        sshd_server.revoke(public)
    fake_aws.unlink(missing_ok=True)
    wrapper.unlink(missing_ok=True)


def freeze_after_a_checkpoint(machine: Machine, job: str) -> int:
    """Freeze the trainer once `last.pt` is on disk and verifies; returns the epoch it holds."""
    import torch

    last = machine.outputs(job) / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        c = machine.container(job)
        assert c is not None and c.status in ("running", "created"), c and c.logs().decode()[-3000:]
        if last.exists() and last.with_name("last.pt.sha256").exists():
            c.pause()
            if sha_ok(last):
                break  # frozen with a whole checkpoint on disk
            c.unpause()  # caught between last.pt and its .sha256: let it finish the write
        time.sleep(0.05)
    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert 1 <= epoch < EPOCHS, "the freeze must land mid-run"
    return epoch


def copy_to_bucket(machine: Machine, job: str) -> None:
    """What infra/bootstrap.sh's watcher does on a real instance: each checkpoint and its .sha256,
    and metrics.jsonl after last.pt."""
    dest = machine.bucket_root / BUCKET.removeprefix("s3://") / job
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt"):
        src = machine.outputs(job) / "checkpoints" / name
        if src.exists() and sha_ok(src):
            shutil.copy2(src, dest / name)
            shutil.copy2(src.with_name(name + ".sha256"), dest / (name + ".sha256"))
            if name == "last.pt" and (machine.outputs(job) / "metrics.jsonl").exists():
                shutil.copy2(machine.outputs(job) / "metrics.jsonl", dest / "metrics.jsonl")


def reclaim(edge, job: str) -> str:
    """AWS takes the spot instance back."""
    edge.spot_reclaimed = True
    ids = [i["InstanceId"] for i in tagged(job)["instances"]]
    assert len(ids) == 1, ids
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=ids)
    return ids[0]


def live_instance(job: str) -> str:
    ids = [i["InstanceId"] for i in tagged(job)["instances"]]
    assert len(ids) == 1, ids
    return ids[0]


def assert_resumed_after(machine: Machine, job: str, epoch: int) -> None:
    outputs = machine.outputs(job)
    status = json.loads((outputs / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == EPOCHS, status
    log = (outputs / "train.log").read_text()
    # the new machine's trainer started at the epoch after the checkpoint, not from zero
    assert f"resumed from /outputs/checkpoints/last.pt: epoch {epoch + 1}," in log, log[-3000:]
    assert f"epoch {epoch}/{EPOCHS} " not in log.split("resumed from", 1)[1]


def assert_no_local_secret_reached(machine: Machine) -> None:
    seen = machine.aws_calls()
    for name, value in LOCAL_SECRETS.items():
        assert value not in seen, f"local {name} reached the instance"
    assert not [line for line in seen.splitlines() if line.startswith("ENV: AWS_")]


# --- --resume ---------------------------------------------------------------------------------


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_reclaimed_spot_job_resumes_from_the_bucket_on_a_new_instance(machine, orch, aws, tmp_path):  # noqa: F811
    data = make_dataset(tmp_path / "data")
    job = job_name("rsb")
    machine.jobs.append(job)
    r = orch("launch", "--instance", "g4dn.xlarge", "--spot", "--name", job, "--data", data, "--no-gpus",
             "--checkpoint-bucket", BUCKET, "--iam-instance-profile", PROFILE, "--", *TINY, "--epochs", EPOCHS)
    assert r.exit_code == 0, r.output
    first = live_instance(job)
    assert {t["Key"]: t["Value"] for t in tagged(job)["instances"][0]["Tags"]}["orch:checkpoint-bucket"] == BUCKET

    epoch = freeze_after_a_checkpoint(machine, job)
    copy_to_bucket(machine, job)
    reclaim(aws, job)
    r = orch("status", job)
    assert r.exit_code == 0, r.output
    assert f"{job}: interrupted" in r.output and f"orch launch --name {job} --resume" in r.output

    # Only --resume: the instance type, spot, data, trainer arguments and bucket are the first launch's.
    r = orch("launch", "--name", job, "--resume")
    assert r.exit_code == 0, r.output
    assert "restored checkpoints/last.pt" in r.output and f"from {BUCKET}/{job}/" in r.output
    second = live_instance(job)
    assert second != first
    assert aws.run_calls[-1]["InstanceType"] == "g4dn.xlarge" and "InstanceMarketOptions" in aws.run_calls[-1]
    assert f"ARGS: s3 cp {BUCKET}/{job}/last.pt " in machine.aws_calls()  # copied on the instance
    assert_no_local_secret_reached(machine)

    r = orch("logs", job, "--follow")
    assert r.exit_code == 0, r.output
    assert_resumed_after(machine, job, epoch)
    # the new machine has the bucket's checkpoint and history: each epoch once, ending where a run
    # never interrupted ends
    assert [m["epoch"] for m in metrics(machine.outputs(job))] == list(range(1, EPOCHS + 1))
    assert orch("teardown", job, "--yes").exit_code == 0


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_reclaimed_spot_job_resumes_from_a_fetched_local_copy(machine, orch, aws, tmp_path):  # noqa: F811
    data = make_dataset(tmp_path / "data")
    job = job_name("rsl")
    machine.jobs.append(job)
    r = orch("launch", "--instance", "g4dn.xlarge", "--spot", "--name", job, "--data", data, "--no-gpus",
             "--", *TINY, "--epochs", EPOCHS)
    assert r.exit_code == 0, r.output
    epoch = freeze_after_a_checkpoint(machine, job)
    copy = tmp_path / "copy"
    r = orch("fetch-weights", job, "--which", "all", "--dest", copy)
    assert r.exit_code == 0, r.output
    before = [m for m in metrics(copy) if m["epoch"] <= epoch]
    reclaim(aws, job)

    r = orch("launch", "--name", job, "--resume", "--resume-from", copy)
    assert r.exit_code == 0, r.output
    assert f"from {copy}" in r.output and "checkpoints/last.pt" in r.output
    assert "ARGS: s3" not in machine.aws_calls()  # no bucket was set: nothing asked S3

    r = orch("logs", job, "--follow")
    assert r.exit_code == 0, r.output
    assert_resumed_after(machine, job, epoch)
    # metrics.jsonl came back with the checkpoint: the whole run, each epoch once
    after = metrics(machine.outputs(job))
    assert [m["epoch"] for m in after] == list(range(1, EPOCHS + 1))
    assert after[:epoch] == before
    assert orch("teardown", job, "--yes").exit_code == 0


def _spot_job_then_reclaim(orch, aws, tmp_path, job: str, *extra) -> None:  # noqa: F811
    data = tmp_path / "data"
    for split in ("train", "val"):   # a dataset folder, as launch checks before creating anything
        (data / split).mkdir(parents=True)
    r = orch("launch", "--instance", "g4dn.xlarge", "--spot", "--name", job, "--ssh-cidr", CIDR,
             "--data", data, *extra, "--", "--epochs", "3")
    assert r.exit_code == 0, r.output
    reclaim(aws, job)
    assert f"{job}: interrupted" in orch("status", job).output


def test_resume_with_no_checkpoint_anywhere_is_refused_before_anything_is_created(
        aws, job_calls, orch, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)  # no ./weights/JOB here
    job = job_name("rsn")
    _spot_job_then_reclaim(orch, aws, tmp_path, job)
    home = Path(os.environ["ORCH_HOME"])
    state_before = (home / "state.json").read_bytes()
    calls = len(aws.run_calls)

    r = orch("launch", "--name", job, "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 2, r.output
    assert no_traceback(r.output)
    assert "nothing to resume from" in r.output and "Nothing was created" in r.output
    assert "--resume-from" in r.output and f"orch fetch-weights {job} --which all" in r.output
    assert (home / "state.json").read_bytes() == state_before
    assert len(aws.run_calls) == calls and tagged(job)["instances"] == []
    assert len(job_calls.started) == 1  # only the first launch started anything

    r = orch("launch", "--name", job, "--resume", "--resume-from", tmp_path / "nowhere", "--ssh-cidr", CIDR)
    assert r.exit_code == 2 and "no checkpoints/last.pt" in r.output, r.output
    assert (home / "state.json").read_bytes() == state_before


def test_resume_reuses_the_recorded_launch_and_a_local_copy_that_verifies(
        aws, job_calls, orch, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    job = job_name("rsr")
    instance_profile()
    _spot_job_then_reclaim(orch, aws, tmp_path, job, "--checkpoint-bucket", BUCKET, "--iam-instance-profile", PROFILE)
    weights = tmp_path / "weights" / job / "checkpoints"  # where `orch fetch-weights JOB` puts them
    weights.mkdir(parents=True)
    (weights / "last.pt").write_bytes(b"checkpoint")
    (weights / "last.pt.sha256").write_text("0" * 64 + "  last.pt\n")  # a damaged copy is refused
    r = orch("launch", "--name", job, "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 2 and "does not match last.pt.sha256" in r.output, r.output

    import hashlib
    (weights / "last.pt.sha256").write_text(hashlib.sha256(b"checkpoint").hexdigest() + "  last.pt\n")
    r = orch("launch", "--name", job, "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    (_, first), (_, spec) = job_calls.started
    assert (spec.data, spec.trainer_args, spec.image, spec.gpus) == (first.data, first.trainer_args, None, True)
    assert spec.restore.bucket == BUCKET and spec.restore.local_dir == str(Path("weights") / job)
    assert aws.run_calls[-1]["InstanceType"] == "g4dn.xlarge" and "InstanceMarketOptions" in aws.run_calls[-1]
    tags = {t["Key"]: t["Value"] for t in aws.run_calls[-1]["TagSpecifications"][0]["Tags"]}
    assert tags["orch:checkpoint-bucket"] == BUCKET and "orch:recover" not in tags
    assert tags["orch:iam-instance-profile"] == PROFILE and aws.run_calls[-1]["IamInstanceProfile"] == {"Name": PROFILE}
    record = json.loads((Path(os.environ["ORCH_HOME"]) / "state.json").read_text())["jobs"][job]["launch"]
    assert (record["data"], record["spot"], record["checkpoint_bucket"]) == (str(tmp_path / "data"), True, BUCKET)

    # Its instance still runs: --resume attaches to it instead of starting a second one.
    r = orch("launch", "--name", job, "--resume", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    assert "not starting a second one" in r.output and len(tagged(job)["instances"]) == 1


@pytest.mark.needs_sshd
def test_a_damaged_bucket_copy_is_never_put_in_place_and_the_local_copy_is_used(
        sshd_server, ssh_endpoint, tmp_path):  # noqa: F811
    import hashlib

    from orchestrator.job.restore import Restore, RestoreError, restore_checkpoints
    from orchestrator.remote.ssh import connect

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    job, record = "damaged", tmp_path / "aws-calls.txt"
    in_bucket = tmp_path / "bucket" / BUCKET.removeprefix("s3://") / job
    in_bucket.mkdir(parents=True)
    (in_bucket / "last.pt").write_bytes(b"torn")  # the watcher was cut mid-copy
    (in_bucket / "last.pt.sha256").write_text(f"{digest(b'whole')}  last.pt\n")
    copy = tmp_path / "copy" / "checkpoints"
    copy.mkdir(parents=True)
    (copy / "last.pt").write_bytes(b"whole")
    (copy / "last.pt.sha256").write_text(f"{digest(b'whole')}  last.pt\n")
    checkpoints = tmp_path / "machine" / "outputs" / "checkpoints"
    fake_aws = sshd_server.bin_dir / "aws"
    fake_aws.write_text(FAKE_AWS.format(record=record, bucket_root=tmp_path / "bucket"))
    fake_aws.chmod(0o755)
    try:
        with connect(ssh_endpoint) as session:
            with pytest.raises(RestoreError, match="does not match its .sha256"):
                restore_checkpoints(session, Restore(bucket=BUCKET), job, str(checkpoints.parent))
            assert sorted(p.name for p in checkpoints.iterdir()) == []  # nothing torn was left in place

            report = restore_checkpoints(session, Restore(bucket=BUCKET, local_dir=str(copy.parent)), job,
                                         str(checkpoints.parent))
            assert (report.source, report.files) == ("local", ("checkpoints/last.pt",))
            assert (checkpoints / "last.pt").read_bytes() == b"whole" and sha_ok(checkpoints / "last.pt")

            # A machine that still has a good checkpoint keeps it: nothing is copied over it.
            calls = record.read_text()
            report = restore_checkpoints(session, Restore(bucket=BUCKET), job, str(checkpoints.parent))
            assert report.source == "machine" and record.read_text() == calls
    finally:
        fake_aws.unlink(missing_ok=True)


# --- --recover ----------------------------------------------------------------------------------


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_launch_recover_relaunches_by_itself_when_the_spot_instance_is_reclaimed(
        machine, orch, aws, tmp_path):  # noqa: F811
    data = make_dataset(tmp_path / "data")
    job = job_name("rcv")
    machine.jobs.append(job)
    result: list = []
    attached = threading.Thread(target=lambda: result.append(orch(
        "launch", "--instance", "g4dn.xlarge", "--spot", "--recover", "--name", job, "--data", data, "--no-gpus",
        "--checkpoint-bucket", BUCKET, "--iam-instance-profile", PROFILE, "--", *TINY, "--epochs", EPOCHS)),
        daemon=True)
    attached.start()
    deadline = time.monotonic() + 300
    while machine.container(job) is None:
        assert attached.is_alive() and time.monotonic() < deadline, result and result[0].output
        time.sleep(0.1)
    first = live_instance(job)
    tags = {t["Key"]: t["Value"] for t in tagged(job)["instances"][0]["Tags"]}
    assert tags["orch:recover"] == "on"

    epoch = freeze_after_a_checkpoint(machine, job)
    copy_to_bucket(machine, job)
    reclaim(aws, job)
    attached.join(timeout=400)
    assert not attached.is_alive(), "launch --recover never finished"
    r = result[0]
    assert r.exit_code == 0, r.output
    assert no_traceback(r.output)
    assert f"AWS reclaimed the spot instance {first}" in r.output and "recovery 1 of 3" in r.output
    assert live_instance(job) != first
    assert f"epoch {EPOCHS}/{EPOCHS}" in r.output  # it followed the resumed run to its end
    assert_resumed_after(machine, job, epoch)
    assert orch("teardown", job, "--yes").exit_code == 0


# --- a full disk during the sync ----------------------------------------------------------------


@pytest.fixture
def small_root(tmp_path):
    """A 2 MiB tmpfs with few inodes as the machine's job root."""
    with tmpfs(tmp_path / "small-root", "size=2m,nr_inodes=400") as mount:
        yield mount


def _take_inodes(folder: Path, leave: int) -> Path:
    ballast = folder / "inode-ballast"
    ballast.mkdir()
    i = 0
    while os.statvfs(folder).f_favail > leave:
        (ballast / str(i)).touch()
        i += 1
    return ballast


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_full_disk_during_the_sync_is_reported_and_the_next_launch_finishes_it(
        machine, orch, small_root, tmp_path):  # noqa: F811
    data = make_dataset(tmp_path / "data")
    files = sum(1 for p in data.rglob("*") if p.is_file())
    job = job_name("dfull")
    machine.jobs.append(job)
    launch = ("launch", "--instance", "g4dn.xlarge", "--name", job, "--remote-root", small_root,
              "--data", data, "--no-gpus", "--", *TINY, "--epochs", "1")
    home = Path(os.environ["ORCH_HOME"])

    # Fewer bytes free than the dataset needs: refused before sending anything.
    ballast = small_root / "ballast"
    ballast.write_bytes(b"\0" * (os.statvfs(small_root).f_bavail * os.statvfs(small_root).f_frsize - 64 * 1024))
    r = orch(*launch)
    assert r.exit_code == 1, r.output
    assert no_traceback(r.output)
    assert "Nothing was sent" in r.output and "free space there" in r.output
    instance = live_instance(job)
    assert f"The instance {instance} is up and recorded" in r.output and f"orch teardown {job}" in r.output
    state = json.loads((home / "state.json").read_text())["jobs"][job]
    assert (state["instance_id"], state["status"]) == (instance, "running")
    assert not any(p.is_file() for p in (small_root / job).rglob("*"))
    ballast.unlink()

    # Bytes enough, inodes not: the disk fills part way through; what arrived stays.
    inodes = _take_inodes(small_root, leave=files // 2)
    r = orch(*launch)
    assert r.exit_code == 1, r.output
    assert no_traceback(r.output)
    assert "filled up during the sync" in r.output and "the next sync sends only the rest" in r.output
    arrived = sum(1 for p in (small_root / job / "data").rglob("*") if p.is_file())
    assert 0 < arrived < files
    assert live_instance(job) == instance  # the same instance, not a second one
    assert json.loads((home / "state.json").read_text())["jobs"][job]["instance_id"] == instance
    assert machine.container(job) is None  # the trainer never started on half a dataset

    # Space freed: the same command sends only what is missing and starts the job.
    shutil.rmtree(inodes)
    r = orch(*launch)
    assert r.exit_code == 0, r.output
    sent = re.search(r"(\d+) of (\d+) files sent", r.output)
    assert sent and int(sent.group(2)) == files and 0 < int(sent.group(1)) <= files - arrived, r.output
    assert sum(1 for p in (small_root / job / "data").rglob("*") if p.is_file()) == files
    assert machine.container(job) is not None
    assert orch("teardown", job, "--yes").exit_code == 0
