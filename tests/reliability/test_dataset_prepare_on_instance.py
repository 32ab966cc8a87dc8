"""`orch data prepare --target aws`: a dataset prepared on an instance from the files as downloaded (a
folder here, sent once; or an s3:// prefix the instance copies), kept in the bucket, the instance torn
down, what it cost said; then a job on another instance trains on it.

Real: moto S3 (server mode) as the bucket, the loopback sshd as the instance, the test dockerd as its
engine with the real trainer image running `trainer make-dataset`. Stand-in: the instance's `aws` command,
a script that does `s3 cp` and `s3 sync` against the same moto server with boto3 (as the AWS CLI with the
instance's role would against S3)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import boto3
import pytest

from tests.fixtures.aws import REGION, aws, moto_url, orch, tagged  # noqa: F401 (fixtures)
from tests.fixtures.dockerd import base_image, docker_engine  # noqa: F401 (fixtures)
from tests.fixtures.sshd import ssh_key, sshd_server  # noqa: F401 (fixtures)
from tests.prepare.miniature import make_cifar100
from tests.reliability.test_resume import PROFILE, job_name, machine  # noqa: F401 (fixtures)

BUCKET = "orch-test-prepare"
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1", "--batch-size", "5")

AWS_OVER_MOTO = '''#!{python}
"""The AWS CLI on the instance, over moto's S3: `aws s3 cp SRC DEST` either way, `aws s3 sync s3://P DIR`."""
import os, sys
import boto3

with open({record!r}, "a") as f:
    f.write("ARGS: " + " ".join(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:] if not a.startswith("--")]
s3 = boto3.client("s3", endpoint_url={url!r}, region_name={region!r}, aws_access_key_id="instance-role",
                  aws_secret_access_key="instance-role")

def split(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key

if args[:2] == ["s3", "cp"] and args[2].startswith("s3://"):
    s3.download_file(*split(args[2]), args[3])
elif args[:2] == ["s3", "cp"] and args[3].startswith("s3://"):
    s3.upload_file(args[2], *split(args[3]))
elif args[:2] == ["s3", "sync"]:
    bucket, prefix = split(args[2])
    prefix = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            target = os.path.join(args[3], o["Key"][len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3.download_file(bucket, o["Key"], target)
else:
    sys.exit("aws stand-in: only s3 cp and s3 sync")
'''


@pytest.fixture
def instance_aws(machine, moto_url, sshd_server):  # noqa: F811
    """The instance's `aws` (installed by `machine` as a folder stand-in) replaced by one over moto's S3."""
    fake = sshd_server.bin_dir / "aws"
    fake.write_text(AWS_OVER_MOTO.format(python=sys.executable, record=str(machine.aws_record), url=moto_url,
                                         region=REGION))
    fake.chmod(0o755)
    return machine


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_dataset_prepared_on_an_instance_is_kept_in_the_bucket_and_trained_on(instance_aws, orch, aws, tmp_path,
                                                                                 monkeypatch):  # noqa: F811
    machine = instance_aws
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    make_cifar100(tmp_path / "downloads")
    machine.jobs += ["data-cifar", "data-cifar-s3"]

    # From a folder here: sent to the instance once, prepared there, kept in the bucket.
    r = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", tmp_path / "downloads", "--target", "aws",
             "--instance", "c6i.4xlarge")
    assert r.exit_code == 0, r.output
    assert "== trainer prepare" in r.output and "== trainer pack" in r.output  # its progress, streamed here
    assert "cost about $" in r.output and "c6i.4xlarge at $0.680/h" in r.output
    assert not [i for i in tagged("data-cifar")["instances"] if i["State"]["Name"] != "terminated"]
    kept, = json.loads(orch("data", "list", "--json").stdout)
    assert (kept["name"], kept["classes"], kept["train_images"], kept["val_images"]) == ("cifar", 5, 15, 10)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {f"orch-datasets/cifar/shards-{kept['version']}/manifest.json", "orch-datasets/cifar/dataset.json"} <= keys
    assert "ARGS: s3 cp manifest.json" in machine.aws_calls()  # uploaded by the instance, with its role

    # From an s3:// prefix: the instance copies the download itself; nothing goes through this machine.
    for path in (tmp_path / "downloads").rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"raw/cifar/{path.relative_to(tmp_path / 'downloads').as_posix()}")
    r = orch("data", "prepare", "cifar-s3", "--kind", "cifar100", "--source", f"s3://{BUCKET}/raw/cifar",
             "--target", "aws")
    assert r.exit_code == 0, r.output
    assert f"ARGS: s3 sync s3://{BUCKET}/raw/cifar" in machine.aws_calls()
    listed = {d["name"]: d for d in json.loads(orch("data", "list", "--json").stdout)}
    assert listed["cifar-s3"]["train_images"] == 15

    # One command from the download to training: named after its source ("cifar"), kept already, so not
    # prepared again; a job on a new instance trains on it, restored from the bucket.
    job = job_name("dsp")
    machine.jobs.append(job)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--data", f"s3://{BUCKET}/raw/cifar/", "--prepare",
             "cifar100", "--no-gpus", "--", *TINY)
    assert r.exit_code == 0, r.output
    assert "dataset cifar is kept already" in r.output and "copying 1 shard(s)" in r.output
    r = orch("logs", job, "--follow")
    assert r.exit_code == 0 and "epoch 1/1" in r.output, r.output
    assert orch("teardown", job, "--yes").exit_code == 0


def test_preparing_on_an_instance_refuses_what_cannot_work_before_anything_is_created(aws, orch, tmp_path,
                                                                                        monkeypatch):  # noqa: F811
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    r = orch("data", "prepare", "x", "--kind", "cifar100", "--source", tmp_path, "--target", "aws")
    assert r.exit_code == 2 and "add --bucket s3://NAME" in r.output
    r = orch("data", "prepare", "x", "--kind", "cifar100", "--source", "s3://b/raw")
    assert r.exit_code == 2 and "prepared on an instance: add --target aws" in r.output
    assert not boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_truncated_download_is_named_and_the_same_command_carries_on_on_the_same_instance(
        instance_aws, orch, aws, tmp_path, monkeypatch):  # noqa: F811
    machine = instance_aws
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    make_cifar100(tmp_path / "downloads")
    archive = tmp_path / "downloads" / "cifar-100-python.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])  # a download cut half way
    machine.jobs.append("data-cut")
    prepare = ("data", "prepare", "cut", "--kind", "cifar100", "--source", tmp_path / "downloads", "--target", "aws")

    r = orch(*prepare)
    assert r.exit_code == 1 and "cifar-100-python.tar.gz" in r.output and "Traceback" not in r.output, r.output
    assert "the same command to carry on" in r.output and "orch teardown data-cut" in r.output
    first, = [i["InstanceId"] for i in tagged("data-cut")["instances"] if i["State"]["Name"] == "running"]
    assert orch("data", "list", "--json").stdout.strip() == "[]"  # no dataset until one is whole

    archive.write_bytes(whole)  # downloaded again
    r = orch(*prepare)
    assert r.exit_code == 0, r.output
    assert f"resuming {first}" in r.output and "== trainer pack" in r.output
    assert [d["name"] for d in json.loads(orch("data", "list", "--json").stdout)] == ["cut"]
    assert not [i for i in tagged("data-cut")["instances"] if i["State"]["Name"] != "terminated"]


KAGGLE_USER, KAGGLE_KEY = "orch-test-user", "0123456789abcdef0123456789abcdef"  # the stand-in's account


@pytest.fixture
def kaggle(instance_aws, sshd_server, tmp_path, monkeypatch):  # noqa: F811
    """The Kaggle stand-in serving the miniature ImageNet as Kaggle zips it, the instance's `kaggle` (the PyPI
    client) sent there, and this machine's token in ~/.kaggle/kaggle.json (mode 600)."""
    from tests.fixtures.kaggle import KaggleStandIn
    from tests.prepare.miniature import make_imagenet

    make_imagenet(tmp_path / "kaggle-files", "kaggle-zip")
    archive = (tmp_path / "kaggle-files" / "imagenet-object-localization-challenge.zip").read_bytes()
    config = tmp_path / "kaggle-config"
    config.mkdir(mode=0o700)
    (config / "kaggle.json").write_text(json.dumps({"username": KAGGLE_USER, "key": KAGGLE_KEY}))
    (config / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    with KaggleStandIn(KAGGLE_USER, KAGGLE_KEY, {"imagenet-object-localization-challenge": archive}) as stand_in:
        wrapper = stand_in.client_wrapper(sshd_server.bin_dir / "kaggle")
        yield stand_in
        wrapper.unlink(missing_ok=True)


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_one_command_from_a_kaggle_competition_to_training_the_token_never_shown_nor_kept(
        kaggle, instance_aws, orch, aws, tmp_path, monkeypatch):  # noqa: F811
    machine = instance_aws
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    job = job_name("kgl")
    from orchestrator.lifecycle.data_instance import job_of

    machine.jobs += [job, job_of("imagenet-object-localization-challenge")]

    r = orch("launch", "--instance", "g4dn.xlarge", "--name", job, "--no-gpus", "--data",
             "kaggle:imagenet-object-localization-challenge", "--prepare", "imagenet", "--", *TINY)
    assert r.exit_code == 0, r.output
    assert f"downloading on" in r.output and f"with your token ({KAGGLE_USER})" in r.output
    assert "Prepared imagenet" in r.output and "cost about $" in r.output
    assert [(m, p, ok) for m, p, _, ok in kaggle.requests] == [
        ("POST", "/api/v1/competitions.CompetitionApiService/DownloadDataFiles", True),
        ("GET", "/files/imagenet-object-localization-challenge.zip", True)]
    kept = {d["name"]: d for d in json.loads(orch("data", "list", "--json").stdout)}
    from tests.prepare.miniature import WNIDS

    assert kept["imagenet-object-localization-challenge"]["classes"] == len(WNIDS)
    r = orch("logs", job, "--follow")
    assert r.exit_code == 0 and "epoch 1/1" in r.output, r.output

    # The key was on the preparing instance only in its mode-600 file, removed once downloaded; nowhere else.
    prep = machine.root / job_of("imagenet-object-localization-challenge")
    assert (prep / "data" / "imagenet-object-localization-challenge.zip").is_file()  # downloaded there
    assert not (prep / ".kaggle-token").exists()
    seen = [r.output, machine.aws_calls(), json.dumps(tagged(job), default=str)]
    seen += [json.dumps(c, default=str) for c in aws.run_calls]  # user data and tags of every instance
    for root in (machine.root, Path(os.environ["ORCH_HOME"])):  # the instances' disks, the state here
        seen += [p.read_bytes().decode(errors="replace") for p in root.rglob("*")
                 if p.is_file() and p.stat().st_size < 1 << 20]
    assert not [text for text in seen if KAGGLE_KEY in text]
    assert orch("teardown", job, "--yes").exit_code == 0


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_a_competition_whose_rules_were_not_accepted_names_the_page_to_accept_them(
        kaggle, instance_aws, orch, aws, monkeypatch):  # noqa: F811
    from tests.fixtures.kaggle import NO_RULES

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    instance_aws.jobs.append(f"data-{NO_RULES}")
    r = orch("data", "prepare", NO_RULES, "--kind", "imagenet", "--source", f"kaggle:{NO_RULES}", "--target", "aws")
    assert r.exit_code == 1, r.output
    assert f"https://www.kaggle.com/competitions/{NO_RULES}/rules" in r.output and KAGGLE_USER in r.output
    assert KAGGLE_KEY not in r.output and "Traceback" not in r.output
    assert not (instance_aws.root / f"data-{NO_RULES}" / ".kaggle-token").exists()


def test_a_kaggle_source_without_a_token_is_refused_before_anything_is_created(aws, orch, tmp_path,
                                                                               monkeypatch):  # noqa: F811
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "none"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    r = orch("data", "prepare", "inet", "--kind", "imagenet", "--source", "kaggle:imagenet-object-localization-challenge",
             "--target", "aws", "--bucket", f"s3://{BUCKET}")
    assert r.exit_code == 2 and "https://www.kaggle.com/settings" in r.output, r.output
    r = orch("data", "prepare", "inet", "--kind", "imagenet", "--source", "kaggle:../etc", "--target", "aws",
             "--bucket", f"s3://{BUCKET}")
    assert r.exit_code == 2 and "kaggle:COMPETITION" in r.output
    r = orch("launch", "--instance", "g4dn.xlarge", "--data", "kaggle:cifar-100")
    assert r.exit_code == 2 and "add --prepare KIND" in r.output
    assert not boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"]


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
@pytest.mark.parametrize("layout", ["imagenet-archives", "tiny-imagenet-zip"])
def test_each_download_layout_is_prepared_on_an_instance_as_its_files_say(instance_aws, orch, aws, tmp_path, layout,
                                                                          monkeypatch):  # noqa: F811
    """The official ILSVRC2012 tars with the devkit, and Tiny ImageNet's zip, as downloaded."""
    from tests.prepare.miniature import make_imagenet, make_tiny

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("ORCH_IAM_INSTANCE_PROFILE", PROFILE)
    monkeypatch.setenv("ORCH_BUCKET", f"s3://{BUCKET}")
    kind = layout.rsplit("-", 1)[0]
    truth = make_imagenet(tmp_path / "dl", "archives") if kind == "imagenet" else make_tiny(tmp_path / "dl", True)
    instance_aws.jobs.append(f"data-{layout}")
    r = orch("data", "prepare", layout, "--kind", kind, "--source", tmp_path / "dl", "--target", "aws")
    assert r.exit_code == 0, r.output
    kept, = json.loads(orch("data", "list", "--json").stdout)
    train = sum(1 for split, _, _ in truth.images if split == "train")
    val = sum(1 for split, _, _ in truth.images if split == "val")
    assert (kept["classes"], kept["val_images"]) == (len(truth.names), val)
    assert kept["train_images"] <= train  # the odd files a Mac copy adds are not images
