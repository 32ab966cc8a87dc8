"""`orch data prepare|list|rm` and `--data dataset:NAME` on this machine: from the files as downloaded (a
miniature CIFAR-100 tarball in its real layout) to a kept, sharded dataset (here, or in a bucket: moto S3),
a job trained on it, and a teardown that leaves it. Real: the `orch` and `trainer` commands, as a user runs
them (trainer as a local process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.aws import aws  # noqa: F401 (fixtures)
from tests.fixtures.aws import orch as orch_here  # noqa: F401 (fixtures: orch in-process, its AWS calls checked)
from tests.prepare.miniature import make_cifar100

ORCH = str(Path(sys.executable).with_name("orch"))
TINY = ("--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--epochs", "1", "--batch-size", "5")


def orch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([ORCH, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "ORCH_LOCAL_RUNNER": "process"})


@pytest.fixture
def downloads(tmp_path) -> Path:
    make_cifar100(tmp_path / "downloads")
    return tmp_path / "downloads"


def test_a_dataset_prepared_from_the_download_is_kept_trained_on_and_outlives_the_job(downloads):
    r = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", str(downloads), "--target", "local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Dataset cifar: 5 classes, 15 train and 10 val images" in r.stdout
    again = orch("data", "prepare", "cifar", "--kind", "cifar100", "--source", str(downloads))
    assert again.returncode == 2 and "exists" in again.stderr and "--replace" in again.stderr

    listed, = json.loads(orch("data", "list", "--json").stdout)
    assert (listed["name"], listed["kind"], listed["classes"], listed["train_images"], listed["val_images"]) == \
        ("cifar", "cifar100", 5, 15, 10)
    assert listed["location"].startswith(os.environ["ORCH_HOME"]) and listed["dollars_per_month"] is None
    assert listed["shards"] >= 1 and listed["bytes"] > 0
    assert not (Path(listed["location"]) / "prepared").exists()  # the work folder went once packed
    assert "cifar" in orch("data", "list").stdout

    launched = orch("launch", "--target", "local", "--data", "dataset:cifar", "--name", "dsjob", "--", *TINY)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    followed = orch("logs", "dsjob", "--follow")
    assert followed.returncode == 0 and "epoch 1/1" in followed.stdout, followed.stdout + followed.stderr
    assert orch("teardown", "dsjob", "--yes").returncode == 0
    assert [d["name"] for d in json.loads(orch("data", "list", "--json").stdout)] == ["cifar"]  # a job's teardown keeps it

    assert orch("data", "rm", "cifar", "--yes").returncode == 0
    assert json.loads(orch("data", "list", "--json").stdout) == []
    gone = orch("launch", "--target", "local", "--data", "dataset:cifar", "--name", "dsjob2", "--", *TINY)
    assert gone.returncode == 2 and "no such dataset here" in gone.stderr and "orch data prepare cifar" in gone.stderr


def test_bad_dataset_requests_are_refused_before_anything_is_written(downloads, tmp_path):
    wrong = orch("data", "prepare", "wrong", "--kind", "imagenet", "--source", str(downloads))
    assert wrong.returncode == 1 and "trainer prepare failed" in wrong.stderr
    assert json.loads(orch("data", "list", "--json").stdout) == []
    for args, says in ((("BAD_NAME", "--kind", "cifar100", "--source", str(downloads)), "is invalid"),
                       (("x", "--kind", "mnist", "--source", str(downloads)), "--kind 'mnist'"),
                       (("x", "--kind", "cifar100", "--source", str(tmp_path / "none")), "no such file or folder"),
                       (("x", "--kind", "cifar100", "--source", "kaggle:imagenet-object-localization-challenge"),
                        "prepared on an instance: add --target aws")):
        r = orch("data", "prepare", *args)
        assert r.returncode == 2 and says in r.stderr, r.stderr
    r = orch("launch", "--instance", "g4dn.xlarge", "--data", "dataset:cifar", "--dry-run")
    assert r.returncode == 2 and "needs the bucket it is kept in" in r.stderr


def test_a_dataset_kept_in_the_bucket_leaves_nothing_here_and_a_job_restores_it_from_there(
        aws, orch_here, downloads, monkeypatch):  # noqa: F811
    import boto3

    from tests.fixtures.aws import REGION

    monkeypatch.setenv("ORCH_LOCAL_RUNNER", "process")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="orch-test-data")
    r = orch_here("data", "prepare", "cifar", "--kind", "cifar100", "--source", downloads, "--bucket", "s3://orch-test-data")
    assert r.exit_code == 0, r.output
    assert "at s3://orch-test-data/orch-datasets/cifar" in r.output
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-data")["Contents"]}
    version = json.loads(s3.get_object(Bucket="orch-test-data", Key="orch-datasets/cifar/dataset.json")["Body"].read())[
        "version"]
    assert keys == {"orch-datasets/cifar/dataset.json", f"orch-datasets/cifar/shards-{version}/manifest.json",
                    f"orch-datasets/cifar/shards-{version}/shard-00000.tar"}
    assert not (Path(os.environ["ORCH_HOME"]) / "datasets" / "cifar").exists()  # the bucket holds it
    monkeypatch.setenv("ORCH_BUCKET", "s3://orch-test-data")  # as config.toml's bucket would
    listed, = json.loads(orch_here("data", "list", "--json").stdout)
    assert listed["location"] == "s3://orch-test-data/orch-datasets/cifar" and listed["train_images"] == 15
    assert listed["dollars_per_month"] == round(listed["bytes"] / 1e9 * 0.023, 2)

    launched = orch_here("launch", "--target", "local", "--data", "dataset:cifar", "--name", "bjob", "--", *TINY)
    assert launched.exit_code == 0, launched.output
    assert f"downloading 1 shard(s) from s3://orch-test-data/orch-datasets/cifar/shards-{version}" in launched.output
    followed = orch_here("logs", "bjob", "--follow")
    assert followed.exit_code == 0 and "epoch 1/1" in followed.output, followed.output
    assert orch_here("teardown", "bjob", "--yes").exit_code == 0
    assert orch_here("data", "rm", "cifar", "--yes").exit_code == 0
    assert "Contents" not in s3.list_objects_v2(Bucket="orch-test-data", Prefix="orch-datasets/")


def test_a_replace_in_the_bucket_keeps_the_old_dataset_until_the_new_one_is_whole(aws, orch_here, downloads):  # noqa: F811
    import boto3

    from tests.fixtures.aws import REGION

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="orch-test-data")
    prepare = ("data", "prepare", "cifar", "--kind", "cifar100", "--source", downloads, "--bucket",
               "s3://orch-test-data", "--json")
    old = json.loads(orch_here(*prepare).stdout)
    old_keys = {o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-data")["Contents"]}

    aws.deny.add("PutObject")  # the upload of the new version fails half way (a policy, a network cut)
    r = orch_here(*prepare, "--replace")
    aws.deny.clear()
    assert r.exit_code == 1 and "S3 transfer failed" in r.output and "Traceback" not in r.output, r.output
    assert {o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-data")["Contents"]} == old_keys
    listed, = json.loads(orch_here("data", "list", "--bucket", "s3://orch-test-data", "--json").stdout)
    assert listed["version"] == old["version"]

    new = json.loads(orch_here(*prepare, "--replace").stdout)
    assert new["version"] != old["version"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-data")["Contents"]}
    assert keys == {"orch-datasets/cifar/dataset.json", f"orch-datasets/cifar/shards-{new['version']}/manifest.json",
                    f"orch-datasets/cifar/shards-{new['version']}/shard-00000.tar"}


def test_descriptions_in_the_bucket_that_orch_did_not_write_are_left_out_and_never_point_elsewhere(
        aws, orch_here, downloads):  # noqa: F811
    import boto3

    from tests.fixtures.aws import REGION

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="orch-test-data")
    good = json.loads(orch_here("data", "prepare", "cifar", "--kind", "cifar100", "--source", downloads,
                                "--bucket", "s3://orch-test-data", "--json").stdout)

    def put(folder: str, **changes) -> None:
        body = {**good, "name": folder, **changes}
        s3.put_object(Bucket="orch-test-data", Key=f"orch-datasets/{folder}/dataset.json", Body=json.dumps(body))

    put("elsewhere", location="s3://attacker-bucket/x")  # where it is comes from where it was found
    put("renamed", name="cifar")  # claims another dataset's name
    put("odd-fields", classes="many")
    put("odd-version", version="../../x")
    put("huge", bytes=10 ** 400)  # a whole number no dataset has: its $/month would overflow
    s3.put_object(Bucket="orch-test-data", Key="orch-datasets/not-json/dataset.json", Body=b"\x1b[2J{")
    r = orch_here("data", "list", "--bucket", "s3://orch-test-data", "--json")
    assert r.exit_code == 0, r.output
    listed = {d["name"]: d["location"] for d in json.loads(r.stdout)}
    assert listed == {"cifar": "s3://orch-test-data/orch-datasets/cifar",
                      "elsewhere": "s3://orch-test-data/orch-datasets/elsewhere"}
    table = orch_here("data", "list", "--bucket", "s3://orch-test-data")
    assert table.exit_code == 0 and "attacker" not in table.output and "\x1b" not in table.output


def test_one_command_prepares_the_download_keeps_it_and_trains_and_the_next_reuses_it(downloads):
    launch = ("launch", "--target", "local", "--data", str(downloads), "--prepare", "cifar100", "--subset-percent", "50")
    r = orch(*launch, "--name", "pjob", "--", *TINY)
    assert r.returncode == 0, r.stderr
    assert "preparing cifar100" in r.stderr and "downloads-p50" in r.stderr
    kept = json.loads(orch("data", "list", "--json").stdout)
    assert [(d["name"], d["classes"]) for d in kept] == [("downloads-p50", 2)]  # 50% of the 5 classes, seeded
    assert orch("logs", "pjob", "--follow").returncode == 0
    r = orch(*launch, "--name", "pjob2", "--", *TINY)
    assert r.returncode == 0 and "dataset downloads-p50 is kept already" in r.stderr, r.stderr
    r = orch("launch", "--target", "local", "--data", str(downloads), "--prepare", "tiny-imagenet", "--subset-percent",
             "50", "--name", "pjob3", "--", *TINY)  # the same name, another kind: never trained on the wrong one
    assert r.returncode == 2 and "kept already, as cifar100" in r.stderr and "--dataset-name" in r.stderr, r.stderr
    for job in ("pjob", "pjob2"):
        orch("teardown", job, "--yes")
    r = orch("launch", "--target", "local", "--data", "demo", "--prepare", "cifar100")
    assert r.returncode == 2 and "makes a dataset from a download" in r.stderr
    r = orch("launch", "--target", "local", "--data", str(downloads), "--resize-short", "64")
    assert r.returncode == 2 and "go with --prepare KIND" in r.stderr
    r = orch("launch", "--target", "local", "--data", str(downloads), "--resize-short-train", "64")
    assert r.returncode == 2 and "go with --prepare KIND" in r.stderr


def test_resize_short_train_reaches_trainer_prepare_is_recorded_and_names_the_dataset(tmp_path):
    """`--prepare KIND --resize-short S --resize-short-train T`: train/ stored at short side T, val/ at S, the
    dataset named SOURCE-S-tT, T recorded in its options and in the restored copy's dataset.json."""
    from PIL import Image

    from tests.prepare.miniature import make_tiny

    make_tiny(tmp_path / "tiny", zipped=True)  # 64x64 JPEGs
    r = orch("launch", "--target", "local", "--data", str(tmp_path / "tiny"), "--prepare", "tiny-imagenet",
             "--resize-short", "24", "--resize-short-train", "16", "--name", "tjob", "--", *TINY)
    assert r.returncode == 0, r.stderr
    kept, = json.loads(orch("data", "list", "--json").stdout)
    assert (kept["name"], kept["options"]) == ("tiny-24-t16", {"resize_short": 24, "resize_short_train": 16})
    followed = orch("logs", "tjob", "--follow")
    assert followed.returncode == 0 and "epoch 1/1" in followed.stdout, followed.stdout + followed.stderr
    restored = Path(kept["location"]) / "data"  # what the job trained on, restored from the shards
    meta = json.loads((restored / "dataset.json").read_text())
    assert (meta["resize_short"], meta["resize_short_train"]) == (24, 16)
    sizes = {split: {Image.open(p).size for p in (restored / split).rglob("*.JPEG")} for split in ("train", "val")}
    assert sizes == {"train": {(16, 16)}, "val": {(24, 24)}}
    assert orch("teardown", "tjob", "--yes").returncode == 0
