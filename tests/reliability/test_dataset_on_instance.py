"""A kept dataset on instances: prepared here into the bucket once (moto S3), then restored by each new
instance from the bucket (nothing from the laptop), a reclaimed spot job's resume included.

Real: the loopback sshd as the instance, the test dockerd as its engine with the real trainer image,
`trainer unpack` checking the shards there. Stand-in: the instance's `aws` command reads a folder that
mirrors the moto bucket (tests/reliability/test_resume.py's `machine`)."""
from __future__ import annotations

import json

import boto3
import pytest

from tests.fixtures.aws import REGION, aws, orch  # noqa: F401 (fixtures)
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.prepare.miniature import make_cifar100
from tests.reliability.test_resume import PROFILE, job_name, machine, reclaim  # noqa: F401 (fixtures)

BUCKET = "orch-test-datasets"
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1", "--batch-size", "5")


def mirror(machine) -> None:  # noqa: F811
    """The moto bucket's objects into the folder the instance's `aws s3 cp` reads."""
    s3 = boto3.client("s3", region_name=REGION)
    for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        target = machine.bucket_root / BUCKET / o["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, o["Key"], str(target))


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_each_new_instance_restores_the_kept_dataset_from_the_bucket(machine, orch, aws, tmp_path):  # noqa: F811
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    make_cifar100(tmp_path / "downloads")
    r = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", tmp_path / "downloads",
             "--bucket", f"s3://{BUCKET}")
    assert r.exit_code == 0, r.output
    mirror(machine)

    job = job_name("dsi")
    machine.jobs.append(job)
    launch = ("launch", "--instance", "g4dn.xlarge", "--spot", "--name", job, "--data", "dataset:cifar", "--no-gpus",
              "--bucket", f"s3://{BUCKET}", "--iam-instance-profile", PROFILE, "--", *TINY)
    r = orch(*launch)
    assert r.exit_code == 0, r.output
    assert f"copying 1 shard(s)" in r.output and f"from s3://{BUCKET}/orch-datasets/cifar" in r.output
    data = machine.root / job / "data"
    kept = json.loads(orch("data", "list", "--bucket", f"s3://{BUCKET}", "--json").stdout)[0]
    shards_uri = f"s3://{BUCKET}/orch-datasets/cifar/shards-{kept['version']}"
    assert (data / "train").is_dir() and (data / ".orch-restored").read_text().strip() == shards_uri
    assert not list((machine.root / job / "shards").rglob("shard-*.tar"))  # removed once restored
    calls = machine.aws_calls()
    assert f"ARGS: s3 cp {shards_uri}/shard-00000.tar shard-00000.tar.partial" in calls
    r = orch("logs", job, "--follow")
    assert r.exit_code == 0 and "epoch 1/1" in r.output, r.output

    # AWS takes the instance back; the job's next instance restores the dataset from the bucket again.
    reclaim(aws, job)
    before = calls.count("shard-00000.tar")
    r = orch(*launch)  # the same launch: a new instance
    assert r.exit_code == 0, r.output
    assert machine.aws_calls().count("shard-00000.tar") > before and "copying 1 shard(s)" in r.output
    assert orch("teardown", job, "--yes").exit_code == 0
    kept = json.loads(orch("data", "list", "--bucket", f"s3://{BUCKET}", "--json").stdout)
    assert [d["name"] for d in kept] == ["cifar"]  # kept after the job


def test_a_dataset_not_in_the_bucket_is_refused_before_anything_is_created(aws, orch, tmp_path):  # noqa: F811
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "dsno", "--data", "dataset:nope", "--bucket",
             f"s3://{BUCKET}", "--iam-instance-profile", PROFILE)
    assert r.exit_code == 2 and f"not in s3://{BUCKET}" in r.output and "orch data prepare nope" in r.output
    assert not boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "dsno", "--data", "dataset:nope")
    assert r.exit_code == 2 and "needs the bucket it is kept in" in r.output
