"""What `orch data prepare --target aws` and `orch launch --prepare` refuse or size before they pay: an
instance preparing something else is never reused, a job of the same name that is not a preparing is never
taken over, a training launch AWS would refuse is refused before its dataset is prepared, and a kept
dataset restored onto the root volume gets a volume that holds it. Against moto, the machines faked at
the SSH edge (tests/fixtures/fake_machine.py)."""
from __future__ import annotations

import json

import boto3
import pytest

from tests.fixtures.aws import REGION, tagged
from tests.prepare.miniature import make_cifar100

BUCKET = "orch-test-guards"
PROFILE = "orch-trainer"


@pytest.fixture
def setup(aws, monkeypatch, tmp_path):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    boto3.client("iam", region_name=REGION).create_instance_profile(InstanceProfileName=PROFILE)  # `orch init` makes it
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    monkeypatch.setenv("ORCH_SSH_CIDR", "203.0.113.7/32")  # never asked of checkip.amazonaws.com
    make_cifar100(tmp_path / "downloads")
    return tmp_path / "downloads"


def live(job: str) -> list[dict]:
    return tagged(job)["instances"]


def test_a_preparing_instance_is_carried_on_only_for_the_same_download_and_options(setup, orch, aws, job_calls):
    prepare = ("data", "prepare", "cifar", "--kind", "cifar100", "--source", setup, "--target", "aws")
    job_calls.fail_start = RuntimeError("the trainer image could not be built")  # the first try stops half way
    r = orch(*prepare)
    assert r.exit_code == 1 and "run the same `orch launch --name data-cifar" in r.output, r.output
    first, = live("data-cifar")
    assert {t["Key"] for t in first["Tags"]} >= {"orch:prepares"}

    for other in (("--subset-percent", "50"), ("--subset-percent", "25")):  # (a resize is refused for CIFAR anyway)
        r = orch(*prepare, *other)
        assert r.exit_code == 2 and "from another download or with other options" in r.output, r.output
        assert "orch teardown data-cifar" in r.output
    assert len(aws.run_calls) == 1 and not job_calls.started[1:]  # nothing new created, nothing started there

    job_calls.fail_start = RuntimeError("the trainer image could not be built")  # (stops there again)
    r = orch(*prepare)  # the same: carried on where it is
    assert f"resuming {first['InstanceId']}" in r.output and "could not be built" in r.output, r.output
    assert len(aws.run_calls) == 1 and len(live("data-cifar")) == 1


def test_a_job_of_the_same_name_that_is_not_a_preparing_is_never_taken_over(setup, orch, aws, job_calls):
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "data-cifar")  # the user's own, provisioned only
    assert r.exit_code == 0, r.output
    r = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", setup, "--target", "aws")
    assert r.exit_code == 2 and "is not the preparing of a dataset" in r.output, r.output
    assert len(aws.run_calls) == 1 and not job_calls.started and len(live("data-cifar")) == 1


def test_a_training_launch_aws_would_refuse_is_refused_before_its_dataset_is_prepared(setup, orch, aws, job_calls):
    aws.quotas["L-DB2E81BA"] = 0.0  # no G instances allowed on demand in this account
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "train", "--data", setup, "--prepare", "cifar100")
    assert r.exit_code == 1 and "before preparing its dataset" in r.output, r.output
    assert "G and VT" in r.output
    assert not aws.run_calls and not job_calls.started  # no preparing instance paid for
    assert not live("data-downloads")


def put_dataset(name: str, gigabytes: int, options: dict | None = None) -> None:
    """A kept dataset of that size, prepared with those options, as orch writes it (its shards are never read
    here)."""
    s3, where = boto3.client("s3", region_name=REGION), f"orch-datasets/{name}"
    manifest = {"shards": [{"name": "shard-00000.tar", "bytes": gigabytes * 10 ** 9, "files": 1, "sha256": "0" * 64}]}
    s3.put_object(Bucket=BUCKET, Key=f"{where}/shards-v1/manifest.json", Body=json.dumps(manifest))
    s3.put_object(Bucket=BUCKET, Key=f"{where}/dataset.json", Body=json.dumps({
        "name": name, "kind": "imagenet", "source": "downloads", "location": f"s3://{BUCKET}/{where}",
        "created_at": "2026-12-05T00:00:00Z", "options": options or {}, "version": "v1", "classes": 1000,
        "train_images": 1281167, "val_images": 50000, "bytes": gigabytes * 10 ** 9, "shards": 1}))


@pytest.mark.parametrize("instance, gigabytes, volume", [
    ("g4dn.xlarge", 300, 450),  # 125 GB of instance store can't hold it: 330 GB on the root volume, plus room
    ("g4dn.xlarge", 100, 200),  # the instance store holds it: the volume as configured
    ("c6i.4xlarge", 40, 200),  # no instance store, but the configured 200 GB hold 44 GB and the system
    ("c6i.4xlarge", 150, 285),
])
def test_a_kept_dataset_restored_onto_the_root_volume_gets_a_volume_that_holds_it(setup, orch, aws, job_calls,
                                                                                   instance, gigabytes, volume):
    put_dataset("big", gigabytes)
    r = orch("launch", "--instance", instance, "--name", "big", "--data", "dataset:big", "--no-gpus")
    assert r.exit_code == 0, r.output
    sizes = [m["Ebs"]["VolumeSize"] for m in aws.run_calls[-1]["BlockDeviceMappings"]]
    assert sizes == [volume]
    assert (f"the volume is {volume} GB, not 200" in r.output) == (volume != 200), r.output


@pytest.mark.parametrize("kind, source, volume", [
    ("imagenet", "s3", 500),  # ImageNet's 147 GB of archives, what is prepared from them and its shards
    ("cifar100", "s3", 200),  # another download from S3: the volume as configured
    ("folder", "big-folder", 290),  # 2.5 times the folder's 100 GB, plus room for the system
])
def test_the_preparing_instance_gets_a_volume_that_holds_the_download_and_what_is_made_from_it(
        setup, orch, aws, job_calls, tmp_path, kind, source, volume):
    if source == "s3":
        source = f"s3://{BUCKET}/raw/{kind}"
    else:
        (tmp_path / source / "a").mkdir(parents=True)
        with open(tmp_path / source / "a" / "big.bin", "wb") as f:
            f.truncate(100 * 10 ** 9)  # sparse: 100 GB by its size, nothing on this disk
        source = tmp_path / source
    job_calls.fail_start = RuntimeError("stop once the instance is made")
    r = orch("data", "prepare", "d", "--kind", kind, "--source", source, "--target", "aws")
    assert r.exit_code == 1 and "stop once the instance is made" in r.output, r.output
    assert [m["Ebs"]["VolumeSize"] for m in aws.run_calls[0]["BlockDeviceMappings"]] == [volume]


MAKE_DATASET = ("make-dataset", "imagenet", "--source", "/data", "--work", "/outputs/prepared",
                "--out", "/outputs/shards")


def test_resize_short_train_reaches_the_preparing_instance_and_names_the_dataset(setup, orch, aws, job_calls):
    """--resize-short-train T goes to `trainer make-dataset` on the preparing instance (`orch launch --prepare` and
    `orch data prepare` alike) and into the default name after the short side; without it, names are as before."""
    source = f"s3://{BUCKET}/raw/imagenet"
    launch = ("launch", "--instance", "g4dn.xlarge", "--data", source, "--prepare", "imagenet", "--resize-short", "256")
    for name, extra in (("imagenet-256", ()), ("imagenet-256-t192", ("--resize-short-train", "192"))):
        job_calls.fail_start = RuntimeError("stop once the preparing instance is made")
        r = orch(*launch, *extra, "--name", f"train-{name}")
        assert r.exit_code == 1 and "stop once the preparing instance is made" in r.output, r.output
        _, spec = job_calls.started[-1]
        assert (spec.job, spec.command) == (f"data-{name}", (*MAKE_DATASET, "--resize-short", "256", *extra))

    job_calls.fail_start = RuntimeError("stop once the preparing instance is made")
    r = orch("data", "prepare", "in-t160", "--kind", "imagenet", "--source", source, "--target", "aws",
             "--resize-short-train", "160")
    assert r.exit_code == 1 and "stop once the preparing instance is made" in r.output, r.output
    _, spec = job_calls.started[-1]
    assert (spec.job, spec.command) == ("data-in-t160", (*MAKE_DATASET, "--resize-short-train", "160"))
    r = orch("data", "prepare", "in-t160", "--kind", "imagenet", "--source", source, "--target", "aws")
    assert r.exit_code == 2 and "with other options" in r.output, r.output  # its work was for train/ at 160
    assert len(aws.run_calls) == 3

    r = orch("launch", "--instance", "g4dn.xlarge", "--data", source, "--resize-short-train", "192")
    assert r.exit_code == 2 and "--resize-short-train" in r.output and "go with --prepare KIND" in r.output, r.output
    r = orch("data", "prepare", "x", "--kind", "imagenet", "--source", source, "--target", "aws",
             "--resize-short-train", "4")
    assert r.exit_code == 2 and "--resize-short-train" in r.output, r.output
    assert len(aws.run_calls) == 3


def test_cifar100_with_a_resize_is_refused_before_an_instance_is_paid_for(setup, orch, aws, job_calls):
    source = f"s3://{BUCKET}/raw/cifar"
    for extra in (("--resize-short", "64"), ("--resize-short-train", "32")):
        r = orch("data", "prepare", "c100", "--kind", "cifar100", "--source", source, "--target", "aws", *extra)
        assert r.exit_code == 2 and "leave them out for --kind cifar100" in r.output, r.output
        r = orch("launch", "--instance", "g4dn.xlarge", "--data", source, "--prepare", "cifar100", *extra)
        assert r.exit_code == 2 and "leave them out for --kind cifar100" in r.output, r.output
    assert not aws.run_calls and not job_calls.started


@pytest.mark.parametrize("kept, reused", [({"resize_short": 256, "resize_short_train": 192}, True),
                                          ({"resize_short": 256}, False)], ids=["same-T", "without-T"])
def test_a_kept_dataset_is_trained_on_only_when_prepared_with_the_same_resize_short_train(setup, orch, aws, job_calls,
                                                                                         kept, reused):
    put_dataset("imagenet-256-t192", 100, options=kept)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "t192", "--data", f"s3://{BUCKET}/raw/imagenet",
             "--prepare", "imagenet", "--resize-short", "256", "--resize-short-train", "192")
    if reused:
        assert r.exit_code == 0 and "dataset imagenet-256-t192 is kept already" in r.output, r.output
        (_, spec), = job_calls.started  # the training only: nothing prepared again
        assert spec.job == "t192" and spec.dataset.name == "imagenet-256-t192"
    else:
        assert r.exit_code == 2 and "kept already, as imagenet {'resize_short': 256}" in r.output, r.output
        assert "--dataset-name" in r.output and not aws.run_calls and not job_calls.started
