"""Two prepares of one dataset name into one bucket at once (two laptops, or a laptop and an instance):
the version started later is the dataset, whichever ends first; neither deletes the other's upload while
it runs, and a description swapped between a read and a write is never overwritten (S3's conditional
writes). Real: the shards `trainer pack` writes from a miniature CIFAR-100, orch's bucket code over moto S3."""
from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest

from orchestrator.cloud import datasets as cloud_datasets
from orchestrator.errors import FlowError
from orchestrator.lifecycle import datasets
from orchestrator.lifecycle.datasets import PrepareRequest
from tests.fixtures.aws import REGION, aws  # noqa: F401 (fixtures)
from tests.prepare.miniature import make_cifar100

BUCKET = "orch-test-versions"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """What `trainer pack` makes of a miniature CIFAR-100, once for the module."""
    root = tmp_path_factory.mktemp("packed")
    make_cifar100(root / "downloads")
    for args in (["prepare", "cifar100", "--source", root / "downloads", "--dest", root / "prepared"],
                 ["pack", "--data", root / "prepared", "--out", root / "shards"]):
        subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], check=True, capture_output=True,
                       timeout=300)
    return root / "shards"


@pytest.fixture
def bucket(aws):  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    return s3


def started(name: str = "cifar"):
    """A prepare of `name` as it starts: a new version, named by when it started."""
    return datasets.new_bucket_version(PrepareRequest(name=name, kind="cifar100", source="x", target="aws",
                                                      bucket=f"s3://{BUCKET}", region=REGION))


def uploaded(info, shards):
    cloud_datasets.upload_shards(shards, datasets.shards_uri(info), REGION)
    return info


def folders(s3) -> set[str]:
    return {o["Key"].split("/")[2] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="orch-datasets/cifar/")
            .get("Contents", []) if o["Key"].count("/") > 2}


def kept_version(s3) -> str:
    return json.loads(s3.get_object(Bucket=BUCKET, Key="orch-datasets/cifar/dataset.json")["Body"].read())["version"]


def test_of_two_prepares_of_one_name_the_one_started_later_is_kept_whichever_ends_first(bucket, shards):
    # The later one ends first: the earlier one, ending after it, is dropped (and only its own upload goes).
    early, late = started(), started()
    uploaded(early, shards), uploaded(late, shards)
    datasets.write_description(late, REGION)
    with pytest.raises(FlowError, match="started after this one"):
        datasets.write_description(early, REGION)
    assert kept_version(bucket) == late.version and folders(bucket) == {f"shards-{late.version}"}

    # The earlier one ends first: the later one's upload, still going, is left alone; it then takes over.
    early, late = started(), started()
    uploaded(early, shards)
    cloud_datasets.upload_shards(shards, datasets.shards_uri(late), REGION)  # its description not written yet
    datasets.write_description(early, REGION)
    assert kept_version(bucket) == early.version
    assert folders(bucket) == {f"shards-{early.version}", f"shards-{late.version}"}
    datasets.write_description(late, REGION)
    assert kept_version(bucket) == late.version and folders(bucket) == {f"shards-{late.version}"}


def test_a_description_swapped_by_another_prepare_between_its_read_and_this_write_is_not_overwritten(
        bucket, shards, monkeypatch):
    early, late = uploaded(started(), shards), uploaded(started(), shards)
    put, read = cloud_datasets.put_description, cloud_datasets.read_description
    reads = []

    def counted(uri, region):
        reads.append(read(uri, region))
        return reads[-1]

    def another_prepare_ends_first(*args, **kwargs):  # between this prepare's read and its write
        monkeypatch.setattr(cloud_datasets, "put_description", put)
        datasets.write_description(late, REGION)
        return put(*args, **kwargs)

    monkeypatch.setattr(cloud_datasets, "put_description", another_prepare_ends_first)
    monkeypatch.setattr(cloud_datasets, "read_description", counted)
    with pytest.raises(FlowError, match="started after this one"):
        datasets.write_description(early, REGION)
    assert reads[0] == (None, None)  # what it read: no dataset yet; its write over that was refused
    assert kept_version(bucket) == late.version and folders(bucket) == {f"shards-{late.version}"}


def test_a_version_whose_shards_are_not_all_in_the_bucket_is_never_made_the_dataset(bucket, shards):
    info = uploaded(started(), shards)
    key = f"orch-datasets/cifar/shards-{info.version}/shard-00000.tar"
    bucket.delete_object(Bucket=BUCKET, Key=key)  # removed meanwhile (`orch data rm`, say)
    with pytest.raises(FlowError, match="not whole"):
        datasets.write_description(info, REGION)
    assert "dataset.json" not in {o["Key"].rsplit("/", 1)[-1] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]}
