"""The account's ECR repository for trainer images: one per region, made once, tagged by orch.

A machine that builds the trainer image pushes it there under its content hash; later machines (the
next job, a spot replacement) pull it instead of building. Pushes and pulls are the instance role's
(infra/instance-role-policy.json); this module only makes sure the repository exists, with a
lifecycle rule that keeps the newest images (each is several GB: $0.10 per GB-month in ECR).

    registry = ensure_repository("us-east-1")     # ImageRegistry, or raises (the caller says why)

$ORCH_ECR_REGISTRY_HOST, when set, replaces the repository URI's host: where machines reach the
registry (the tests point it at a registry on loopback, standing in for ECR's).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from orchestrator.cloud.aws import CREATED_BY, TAG_CREATED_BY, client, error_code
from orchestrator.records import ImageRegistry

REPOSITORY = "orch-trainer"
KEEP_IMAGES = 5
LIFECYCLE = {"rules": [{
    "rulePriority": 1,
    "description": f"orch: keep the {KEEP_IMAGES} newest trainer images",
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
    "action": {"type": "expire"},
}]}


@dataclass(frozen=True)
class RepositorySetup:
    registry: ImageRegistry
    created: bool


def _registry(uri: str, region: str) -> ImageRegistry:
    host = os.environ.get("ORCH_ECR_REGISTRY_HOST", "").strip()
    if host:
        uri = f"{host}/{uri.split('/', 1)[1]}"
    return ImageRegistry(repository=uri, region=region)


def ensure_repository(region: str) -> RepositorySetup:
    """The `orch-trainer` repository in `region`, created (tagged, with its lifecycle rule) when missing."""
    ecr = client("ecr", region)
    try:
        found = ecr.describe_repositories(repositoryNames=[REPOSITORY])["repositories"][0]
        return RepositorySetup(_registry(found["repositoryUri"], region), created=False)
    except Exception as e:
        if error_code(e) != "RepositoryNotFoundException":
            raise
    try:
        made = ecr.create_repository(repositoryName=REPOSITORY, imageTagMutability="MUTABLE",
                                     tags=[{"Key": TAG_CREATED_BY, "Value": CREATED_BY}])["repository"]
    except Exception as e:
        if error_code(e) != "RepositoryAlreadyExistsException":  # another launch made it just now
            raise
        return ensure_repository(region)
    ecr.put_lifecycle_policy(repositoryName=REPOSITORY, lifecyclePolicyText=json.dumps(LIFECYCLE))
    return RepositorySetup(_registry(made["repositoryUri"], region), created=True)
