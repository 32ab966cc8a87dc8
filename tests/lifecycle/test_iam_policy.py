"""The policies in infra/: linted with parliament, and proved against the calls orch makes.

Every test that uses the `aws` fixture already fails when orch calls something infra/iam-policy.json
does not grant (tests/fixtures/iam_policy.py); these show that check bites, and lint the files.
"""
from __future__ import annotations

import json
import warnings
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from tests.fixtures.aws import REGION
from tests.fixtures.iam_policy import POLICY, problems

INFRA = POLICY.parent
IDENTITY_POLICIES = ["iam-policy.json", "iam-init-policy.json", "instance-role-policy.json"]
CIDR = "203.0.113.7/32"


def lint(path: Path) -> list:
    with warnings.catch_warnings():  # parliament imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string

    return analyze_policy_string(path.read_text(), filepath=str(path), ignore_private_auditors=True).findings


def covered_elsewhere(statements: list[dict], action: str, required: str) -> bool:
    """parliament checks each statement alone; RunInstances is split by resource on purpose."""
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if action in actions and any(fnmatchcase(r.replace("arn:aws:", "arn:*:"), required) for r in resources):
            return True
    return False


@pytest.mark.parametrize("name", IDENTITY_POLICIES)
def test_the_shipped_policies_pass_parliament(name):
    path = INFRA / name
    statements = json.loads(path.read_text())["Statement"]
    left = []
    for finding in lint(path):
        if finding.issue == "RESOURCE_MISMATCH":
            finding.detail = [d for d in finding.detail
                              if not covered_elsewhere(statements, d["action"], d["required_format"])]
            if not finding.detail:
                continue
        left.append((finding.issue, finding.detail, finding.location))
    assert left == []


def test_only_ec2_may_assume_the_instance_role():
    trust = json.loads((INFRA / "instance-role-trust.json").read_text())
    (st,) = trust["Statement"]
    assert st["Effect"] == "Allow" and st["Action"] == "sts:AssumeRole"
    assert st["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_a_spot_launch_is_allowed_by_the_shipped_policy_and_refused_by_one_without_the_spot_request(
        aws, orch, job_calls, tmp_path):
    r = orch("launch", "--instance", "g4dn.2xlarge", "--name", "pol1", "--ssh-cidr", CIDR, "--spot")
    assert r.exit_code == 0, r.output
    assert problems(aws.calls, REGION) == []
    assert {"ec2:RunInstances", "ec2:CreateSecurityGroup", "ec2:CreateKeyPair", "ssm:GetParameter",
            "servicequotas:GetServiceQuota"} <= {c.action for c in aws.calls}

    # The policy as it was before spot requests were covered: the check names what is missing.
    old = json.loads(POLICY.read_text())
    for st in old["Statement"]:
        if isinstance(st["Resource"], list):
            st["Resource"] = [r for r in st["Resource"] if "spot-instances-request" not in r]
    (tmp_path / "old.json").write_text(json.dumps(old))
    (problem,) = problems(aws.calls, REGION, tmp_path / "old.json")
    assert problem.startswith("ec2:RunInstances on spot-instances-request")

