"""The account's ECR repository for the trainer image: made once by a launch, tagged, with a rule that keeps
the newest images, and handed to the machine (which pulls from it or builds and pushes: tests/machines/
test_image_registry.py). A policy without ECR still launches, and says the instance builds the image."""
from __future__ import annotations

import json

import boto3

from orchestrator.records import ImageRegistry
from tests.fixtures.aws import REGION, aws, job_calls, orch  # noqa: F401 (fixtures)

CIDR = "198.51.100.7/32"


def launch(orch, job, *extra):  # noqa: F811
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, "--data", "demo", *extra)


def test_the_first_launch_makes_the_repository_and_every_launch_hands_it_to_the_machine(aws, orch, job_calls):  # noqa: F811
    r = launch(orch, "img1")
    assert r.exit_code == 0, r.output
    assert "orch-trainer (created; it keeps the 5 newest images)" in r.output
    ecr = boto3.client("ecr", region_name=REGION)
    repo, = ecr.describe_repositories()["repositories"]
    assert repo["repositoryName"] == "orch-trainer"
    assert {"Key": "orch:created-by", "Value": "orch"} in ecr.list_tags_for_resource(
        resourceArn=repo["repositoryArn"])["tags"]
    rule, = json.loads(ecr.get_lifecycle_policy(repositoryName="orch-trainer")["lifecyclePolicyText"])["rules"]
    assert rule["selection"]["countNumber"] == 5 and rule["action"]["type"] == "expire"

    r = launch(orch, "img2")
    assert r.exit_code == 0, r.output
    assert "(created" not in r.output and len(ecr.describe_repositories()["repositories"]) == 1
    # The repository's host as machines reach it ($ORCH_ECR_REGISTRY_HOST: never ECR's real one in the tests).
    assert repo["repositoryUri"].endswith(".amazonaws.com/orch-trainer")
    assert {spec.registry for _, spec in job_calls.started} == {ImageRegistry("127.0.0.1:9/orch-trainer", REGION)}


def test_a_policy_without_ecr_launches_and_the_instance_builds_the_image(aws, orch, job_calls):  # noqa: F811
    aws.deny.add("DescribeRepositories")
    r = launch(orch, "img3")
    assert r.exit_code == 0, r.output
    assert "no ECR repository (AccessDeniedException): the instance builds the trainer image itself" in r.output
    (_, spec), = job_calls.started
    assert spec.registry is None


def test_a_prebuilt_image_needs_no_repository(aws, orch, job_calls):  # noqa: F811
    r = launch(orch, "img4", "--image", "my/trainer:1")
    assert r.exit_code == 0, r.output
    assert not [c for c in aws.calls if c.service == "ecr"]
    assert job_calls.started[0][1].registry is None
