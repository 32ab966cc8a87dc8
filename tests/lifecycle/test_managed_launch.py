"""`orch launch --managed` against moto: the plan, the refusals before anything is made, the group of one with the
job's spec and orch's package in the checkpoint bucket (the package's hash in the user data), nothing started from
the laptop, `orch status` telling the group's story, and a teardown that deletes the group, its template and the spec
but never the checkpoints. The instance's side (it starts the job from the bucket) is tests/lifecycle/
test_managed_e2e.py."""
from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone

from pathlib import Path

import boto3
import pytest

from tests.fixtures.aws import REGION, read_state, tagged

CIDR = "203.0.113.7/32"
CKPT = "s3://orch-test-ckpt/runs"
MANAGED = ("--managed", "--spot", "--iam-instance-profile", "orch-trainer", "--checkpoint-bucket", CKPT,
           "--ssh-cidr", CIDR)


@pytest.fixture
def managed_aws(aws, monkeypatch):
    monkeypatch.delenv("ORCH_BOOTSTRAP_SCRIPT")  # the real infra/bootstrap.sh: each instance starts the job with it
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="orch-test-ckpt")
    return aws


def launch(orch, job, *extra, types="g4dn.xlarge,g5.xlarge"):
    return orch("launch", "--instance", types, "--name", job, *MANAGED, "--data", "demo", *extra)


def group(job: str) -> dict | None:
    found = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"orch-{job}"])["AutoScalingGroups"]
    return found[0] if found else None


def objects(prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="orch-test-ckpt", Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket="orch-test-ckpt", Key=k)["Body"].read() for k in keys}


def user_data_of(job: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    (template,) = ec2.describe_launch_templates(Filters=[{"Name": "tag:orch:job", "Values": [job]}])["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    return base64.b64decode(data["UserData"]).decode()


def test_the_dry_run_shows_the_group_over_every_type_and_creates_nothing(managed_aws, orch):
    r = orch("launch", "--instance", "g4dn.xlarge,g5.xlarge", "--name", "plan", *MANAGED, "--data", "demo",
             "--dry-run")
    assert r.exit_code == 0, r.output
    assert "managed           Auto Scaling group orch-plan of one over g4dn.xlarge, g5.xlarge" in r.output
    assert "Dry run: nothing was created." in r.output
    assert group("plan") is None and objects("runs/") == {}
    plan = json.loads(orch("launch", "--instance", "g4dn.xlarge,g5.xlarge", "--name", "plan", *MANAGED, "--data",
                           "demo", "--dry-run", "--json").stdout)["plan"]
    assert plan["managed"] == ["g4dn.xlarge", "g5.xlarge"] and plan["user_data_bytes"] < 16384


@pytest.mark.parametrize("args, says", [
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--managed", "--iam-instance-profile", "p"),
     "--managed needs --checkpoint-bucket"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "/tmp", *MANAGED), "reads its data from S3"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--nodes", "2", *MANAGED), "--nodes"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--env", "A=1", *MANAGED), "--env"),
    (("--instance", "g4dn.xlarge", "--name", "x", "--data", "demo", "--on-demand-fallback", *MANAGED),
     "does not fall back by itself"),
    (("--instance", "g4dn.xlarge,g5.xlarge", "--name", "x", "--data", "demo"), "several types are for --managed"),
    (("--instance", "g4dn.xlarge,,g5.xlarge", "--name", "x", "--data", "demo", *MANAGED), "distinct types"),
    (("--instance", "g4dn.xlarge", "--name", "x", *MANAGED), "keeps a training job running"),
])
def test_what_a_replacement_could_not_set_up_from_the_bucket_is_refused_before_anything_is_made(
        managed_aws, orch, args, says):
    r = orch("launch", *args)
    assert r.exit_code == 2, r.output
    assert says in r.output
    assert group("x") is None and tagged("x")["instances"] == [] and tagged("x")["key_pairs"] == []


def test_a_managed_launch_leaves_the_job_to_its_group_and_teardown_removes_all_but_the_checkpoints(
        managed_aws, orch, job_calls):
    r = launch(orch, "m", "--", "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert "AWS keeps one instance of m running (g4dn.xlarge, g5.xlarge, spot)" in r.output
    assert job_calls.started == []  # the laptop starts nothing: the instance does, from the bucket

    raw = group("m")
    assert raw["DesiredCapacity"] == 1 and len(raw["Instances"]) == 1
    assert {t["Key"]: t["Value"] for t in raw["Tags"]}["orch:spec"] == f"{CKPT}/orch-jobs/m"
    (instance,) = tagged("m")["instances"]
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["orch:managed"] == "orch-m"
    assert read_state(Path(os.environ["ORCH_HOME"]).parent)["jobs"]["m"]["instance_id"] == instance["InstanceId"]

    kept = objects("runs/orch-jobs/m/")
    spec = json.loads(kept["runs/orch-jobs/m/spec.json"])
    assert (spec["job"], spec["data"], spec["checkpoint_bucket"]) == ("m", "demo", CKPT)
    assert spec["trainer_args"] == ["--epochs", "2"]
    (package_key,) = [k for k in kept if k.endswith(".tar.gz")]
    user_data = user_data_of("m")
    digest = hashlib.sha256(kept[package_key]).hexdigest()
    assert f"export ORCH_PACKAGE_SHA256={digest}\n" in user_data
    assert f"export ORCH_PACKAGE_URI=s3://orch-test-ckpt/{package_key}\n" in user_data
    assert f"export ORCH_SPEC_URI={CKPT}/orch-jobs/m/spec.json\n" in user_data
    assert "export ORCH_MANAGED_GROUP=orch-m\n" in user_data and "export ORCH_CAP_FROM=" in user_data

    again = launch(orch, "m", "--", "--epochs", "2")  # attaches: no second group, template or instance
    assert again.exit_code == 0, again.output
    assert "orch-m: 1 instance(s) wanted, 1 up" in again.output and len(tagged("m")["instances"]) == 1

    boto3.client("s3", region_name=REGION).put_object(Bucket="orch-test-ckpt", Key="runs/m/last.pt", Body=b"w")
    down = orch("teardown", "m", "--yes")
    assert down.exit_code == 0, down.output
    assert f"{CKPT}/orch-jobs/m/spec.json (the job's spec and orch, not its checkpoints)" in down.output
    assert "auto scaling group orch-m" in down.output and "Nothing tagged orch:job=m remains." in down.output
    assert group("m") is None and objects("runs/orch-jobs/") == {} and objects("runs/m/") == {"runs/m/last.pt": b"w"}
    held = tagged("m")
    assert held["instances"] == [] and held["security_groups"] == [] and held["key_pairs"] == []
    assert boto3.client("ec2", region_name=REGION).describe_launch_templates(
        Filters=[{"Name": "tag:orch:job", "Values": ["m"]}])["LaunchTemplates"] == []


def test_checkpoints_of_an_earlier_job_of_that_name_need_resume_to_be_continued(managed_aws, orch, job_calls):
    boto3.client("s3", region_name=REGION).put_object(Bucket="orch-test-ckpt", Key="runs/old/last.pt", Body=b"w")
    r = launch(orch, "old")
    assert r.exit_code == 2 and "an earlier job old left checkpoints" in r.output, r.output
    assert group("old") is None and tagged("old")["key_pairs"] == []
    r = launch(orch, "old", "--resume")
    assert r.exit_code == 0, r.output
    assert group("old")["DesiredCapacity"] == 1


def test_status_tells_the_groups_story_replacements_and_a_job_that_ended_on_purpose(managed_aws, orch, job_calls):
    assert launch(orch, "s").exit_code == 0
    at = datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)
    managed_aws.scaling_activities[:] = [  # as AWS words them (moto keeps no history)
        {"ActivityId": "1", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful", "StartTime": at,
         "Description": "Launching a new EC2 instance: i-0aaa", "Cause": "At 2026-12-06T09:30:00Z a user request "
         "created an AutoScalingGroup changing the desired capacity from 0 to 1."},
        {"ActivityId": "2", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful",
         "StartTime": at.replace(hour=11), "Description": "Terminating EC2 instance: i-0aaa",
         "Cause": "At 2026-12-06T11:00:00Z an instance was taken out of service in response to an EC2 instance "
                  "rebalance recommendation."},
        {"ActivityId": "3", "AutoScalingGroupName": "orch-s", "StatusCode": "Successful",
         "StartTime": at.replace(hour=11, minute=1), "Description": "Launching a new EC2 instance: i-0bbb",
         "Cause": "At 2026-12-06T11:01:00Z an instance was started in response to a difference between desired "
                  "and actual capacity, increasing the capacity from 0 to 1."}]
    r = orch("status", "s", "--json")
    view = json.loads(r.stdout)
    assert view["state"] == "running", r.output
    assert "managed by Auto Scaling group orch-s" in view["note"] and "1 replacement(s) so far" in view["note"]
    assert "rebalance recommendation" in view["note"]

    ec2 = boto3.client("ec2", region_name=REGION)
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName="orch-s",
                                                                         DesiredCapacity=0)  # as the watcher does
    if left := [i["InstanceId"] for i in tagged("s")["instances"]]:  # moto ends it at once; AWS a moment later
        ec2.terminate_instances(InstanceIds=left)
    r = orch("status", "s")
    assert "ended" in r.output and "The job ended on purpose" in r.output, r.output
    assert group("s")["Instances"] == []  # not replaced


def test_with_no_instance_up_fetch_weights_takes_the_checkpoints_from_the_bucket_each_checked(
        managed_aws, orch, job_calls, tmp_path):
    assert launch(orch, "w").exit_code == 0
    boto3.client("autoscaling", region_name=REGION).set_desired_capacity(AutoScalingGroupName="orch-w",
                                                                         DesiredCapacity=0)  # ended: none up
    s3 = boto3.client("s3", region_name=REGION)
    weights = b"weights" * 1000
    for key, body in (("last.pt", weights), ("last.pt.sha256", f"{hashlib.sha256(weights).hexdigest()}  last.pt\n"),
                      ("metrics.jsonl", '{"epoch": 1}\n')):
        s3.put_object(Bucket="orch-test-ckpt", Key=f"runs/w/{key}", Body=body)
    r = orch("fetch-weights", "w", "--which", "last", "--dest", str(tmp_path / "got"))
    assert r.exit_code == 0, r.output
    assert f"No instance of w is up: from its checkpoint bucket, {CKPT}/w/" in r.output
    assert (tmp_path / "got" / "checkpoints" / "last.pt").read_bytes() == weights and "(sha256 ok)" in r.output
    assert (tmp_path / "got" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'

    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt", Body=b"a newer one, mid-copy")
    s3.put_object(Bucket="orch-test-ckpt", Key="runs/w/last.pt.sha256", Body=f"{'0' * 64}  last.pt\n")
    r = orch("fetch-weights", "w", "--which", "last", "--dest", str(tmp_path / "got"))
    assert r.exit_code != 0 and "does not match its .sha256" in r.output, r.output
    assert (tmp_path / "got" / "checkpoints" / "last.pt").read_bytes() == weights  # the good copy here is kept
    assert list((tmp_path / "got" / "checkpoints").glob("*.fetched")) == []


def test_a_launch_without_managed_over_a_managed_job_starts_nothing_there(managed_aws, orch, job_calls):
    assert launch(orch, "g").exit_code == 0
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "g", "--ssh-cidr", CIDR, "--data", "demo")
    assert r.exit_code != 0 and "Job g is managed" in r.output, r.output
    assert job_calls.started == [] and len(tagged("g")["instances"]) == 1
