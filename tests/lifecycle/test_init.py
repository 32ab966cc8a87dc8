"""`orch init`: the orch-trainer role and instance profile, made once from infra/, and said plainly."""
from __future__ import annotations

import json

import boto3

from tests.fixtures.aws import REGION
from tests.fixtures.iam_policy import INIT_POLICY


def role_policy() -> dict:
    doc = boto3.client("iam", region_name=REGION).get_role_policy(RoleName="orch-trainer", PolicyName="orch-trainer")
    raw = doc["PolicyDocument"]
    return raw if isinstance(raw, dict) else json.loads(raw)


def test_init_creates_the_tagged_role_and_profile_scoped_to_the_buckets_given(aws, orch):
    aws.policies.append(INIT_POLICY)  # what `orch init` calls is for an admin, not the day-to-day policy
    r = orch("init", "--data-bucket", "s3://my-datasets/imagenet", "--checkpoint-bucket", "s3://my-ckpt/orch")
    assert r.exit_code == 0, r.output
    assert "role orch-trainer: created" in r.output and "instance profile orch-trainer: created" in r.output
    assert "--iam-instance-profile orch-trainer" in r.output

    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName="orch-trainer")["Role"]
    assert {"Key": "orch:created-by", "Value": "orch"} in role["Tags"]
    trust = role["AssumeRolePolicyDocument"]
    assert (trust if isinstance(trust, dict) else json.loads(trust))["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"}
    policy = json.dumps(role_policy())
    assert "EXAMPLE" not in policy
    assert "arn:aws:s3:::my-datasets/*" in policy and "arn:aws:s3:::my-ckpt/*" in policy
    (profile,) = [p for p in iam.list_instance_profiles()["InstanceProfiles"] if p["InstanceProfileName"] == "orch-trainer"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["orch-trainer"]


def test_init_again_changes_only_what_differs(aws, orch):
    aws.policies.append(INIT_POLICY)
    assert orch("init", "--data-bucket", "my-datasets").exit_code == 0
    again = json.loads(orch("init", "--data-bucket", "my-datasets", "--json").stdout)
    assert again["changed"] is False and again["policy"] == "unchanged" and not again["role_created"]

    r = orch("init", "--data-bucket", "my-datasets", "--checkpoint-bucket", "s3://other-ckpt")
    assert r.exit_code == 0, r.output
    assert "role orch-trainer: already there" in r.output and "updated to the buckets given" in r.output
    assert "arn:aws:s3:::other-ckpt/*" in json.dumps(role_policy())

    r = orch("init")  # no bucket: the policy stays as it was
    assert "kept as it was" in r.output and "arn:aws:s3:::other-ckpt/*" in json.dumps(role_policy())


def test_init_refuses_a_bucket_that_cannot_exist_and_creates_nothing(aws, orch):
    r = orch("init", "--data-bucket", "s3://My_Bucket")
    assert r.exit_code == 2 and "not an S3 bucket name" in r.output and "Nothing was created" in r.output
    assert boto3.client("iam", region_name=REGION).list_roles()["Roles"] == []


def test_doctor_says_when_the_instance_profile_is_missing_and_when_it_is_there(aws, orch):
    aws.policies.append(INIT_POLICY)
    checks = {c["name"]: c for c in json.loads(orch("doctor", "--json").stdout)}
    missing = checks["instance profile orch-trainer"]
    assert missing["ok"] is None and "orch init" in missing["detail"]

    assert orch("init").exit_code == 0
    checks = {c["name"]: c for c in json.loads(orch("doctor", "--json").stdout)}
    assert checks["instance profile orch-trainer"]["ok"] is True
