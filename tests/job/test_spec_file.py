"""A managed job's spec in the bucket (job/spec_file.py) and an instance starting the job from it alone
(lifecycle/self_start.py): what is written, what is refused on the way in and on the way back."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import boto3
import pytest

from orchestrator.config import ConfigError
from orchestrator.job import spec_file
from orchestrator.records import DatasetSource, ImageRegistry, JobSpec, KaggleToken, Restore, TrainerEnv
from tests.fixtures.aws import REGION, aws, moto_url  # noqa: F401 (fixtures)

SPEC = JobSpec(job="rn50", data="dataset:imagenet-256", trainer_args=("--recipe", "t4-rn50"),
               restore=Restore(bucket="s3://ckpt-bucket/orch-ckpt"),
               registry=ImageRegistry("123456789012.dkr.ecr.us-east-1.amazonaws.com/orch-trainer", "us-east-1"),
               dataset=DatasetSource("imagenet-256", "s3://data-bucket/orch-datasets/imagenet-256/shards-v2",
                                     (("shard-00000.tar", 1000), ("shard-00001.tar", 2000)), "ab" * 32),
               autostop_minutes=30)


def test_a_spec_comes_back_from_the_bucket_as_it_was_written():
    raw = json.loads(spec_file.dumps(SPEC, "us-east-1"))
    back, region = spec_file.from_json(raw, "s3://b/orch-jobs/rn50/spec.json")
    assert region == "us-east-1" and back == SPEC
    assert spec_file.spec_uri("s3://b/", "rn50") == "s3://b/orch-jobs/rn50/spec.json"


@pytest.mark.parametrize("spec, refused", [
    (JobSpec(job="j", data="demo", env=TrainerEnv((("WANDB_API_KEY", "secret"),))), "--env values are never"),
    (JobSpec(job="j", data="kaggle:imagenet", kaggle=KaggleToken("me", "key")), "not a Kaggle download"),
    (JobSpec(job="j", data="/home/me/imagenet"), "reads its data from the bucket"),
])
def test_what_a_bucket_must_not_hold_or_an_instance_cannot_reach_is_refused_before_it_is_written(spec, refused):
    with pytest.raises(ConfigError, match=refused):
        spec_file.to_json(spec, "us-east-1")


@pytest.mark.parametrize("change, refused", [
    ({"job": "../../etc"}, "job name"),
    ({"data": "/etc"}, "data is not"),
    ({"trainer_args": "--recipe t4-rn50"}, "trainer_args"),
    ({"checkpoint_bucket": "file:///etc"}, "checkpoint_bucket"),
    ({"remote_root": "/tmp/../etc"}, "remote_root"),
    ({"region": "us-east-1; rm -rf /"}, "region"),
    ({"dataset": {"uri": "s3://data-bucket/x", "shards": [["../../.bashrc", 1]]}}, "shards"),
    ({"dataset": {"name": "x", "uri": "s3://data-bucket/x", "shards": [["shard-00000.tar", 1]],
                  "manifest_key": "../../../x"}}, "manifest key"),
    ({"schema": 2}, "schema 1"),
])
def test_a_spec_edited_in_the_bucket_is_refused_field_by_field(change, refused):
    raw = {**json.loads(spec_file.dumps(SPEC, "us-east-1")), **change}
    with pytest.raises(ConfigError, match=refused):
        spec_file.from_json(raw, "s3://b/orch-jobs/rn50/spec.json")


def self_start(uri: str, pinned: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.lifecycle.self_start", uri], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "ORCH_REGION": REGION, "ORCH_SPEC_SHA256": pinned})


def test_an_instance_with_no_spec_or_a_refused_one_says_so_and_starts_nothing(aws):  # noqa: F811
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="jobs-bucket")
    missing = self_start("s3://jobs-bucket/orch-jobs/gone/spec.json")
    assert missing.returncode == 2 and "no job spec there" in missing.stderr, missing.stderr
    s3.put_object(Bucket="jobs-bucket", Key="orch-jobs/bad/spec.json",
                  Body=json.dumps({**json.loads(spec_file.dumps(SPEC, REGION)), "job": "../x"}).encode())
    bad = self_start("s3://jobs-bucket/orch-jobs/bad/spec.json")
    assert bad.returncode == 2 and "job name is not one orch gives: refused" in bad.stderr, bad.stderr


def test_an_instance_runs_only_the_spec_its_launch_pinned_and_only_under_its_own_job(aws):  # noqa: F811
    """Every instance's role can write to the bucket: a spec rewritten there, or another job's copied under this
    job's name, starts nothing."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="jobs-bucket")
    body = spec_file.dumps(SPEC, REGION)
    s3.put_object(Bucket="jobs-bucket", Key="orch-jobs/rn50/spec.json", Body=body)
    rewritten = self_start("s3://jobs-bucket/orch-jobs/rn50/spec.json", pinned=hashlib.sha256(b"other").hexdigest())
    assert rewritten.returncode == 2 and "not the spec this job was launched with" in rewritten.stderr
    s3.put_object(Bucket="jobs-bucket", Key="orch-jobs/victim/spec.json", Body=body)  # rn50's, under victim
    moved = self_start("s3://jobs-bucket/orch-jobs/victim/spec.json", pinned=hashlib.sha256(body).hexdigest())
    assert moved.returncode == 2 and "its job is rn50, not the one its place names" in moved.stderr, moved.stderr
