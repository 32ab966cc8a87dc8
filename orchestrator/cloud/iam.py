"""The instance role and profile a job's instance runs with (s3:// data, checkpoint buckets), made once.

Idempotent: each call reads first and changes only what differs, and says what it did. Everything
it creates carries `orch:created-by=orch`. IAM is global: the region only picks the endpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote

from orchestrator.cloud.aws import CREATED_BY, TAG_CREATED_BY, client, error_code

INLINE_POLICY = "orch-trainer"  # the role's one inline policy, from infra/instance-role-policy.json
_NOT_FOUND = "NoSuchEntity"


@dataclass(frozen=True)
class RoleSetup:
    """What `ensure_instance_role` found and did."""

    role: str
    profile: str
    role_created: bool = False
    trust_updated: bool = False
    policy: str = "unchanged"  # created, updated, unchanged; none or kept: no bucket given (kept: an earlier policy)
    profile_created: bool = False
    role_added_to_profile: bool = False

    @property
    def changed(self) -> bool:
        return (self.role_created or self.trust_updated or self.policy in ("created", "updated")
                or self.profile_created or self.role_added_to_profile)


def _tags() -> list[dict[str, str]]:
    return [{"Key": TAG_CREATED_BY, "Value": CREATED_BY}]


def _document(raw) -> dict:
    """IAM returns policy documents URL-encoded (botocore decodes some of them): a dict either way."""
    return raw if isinstance(raw, dict) else json.loads(unquote(raw))


def ensure_instance_role(region: str, name: str, trust: dict, policy: dict | None) -> RoleSetup:
    """The role `name` (assumable per `trust`), its inline `policy`, and an instance profile of the same name."""
    iam = client("iam", region)
    role_created = trust_updated = False
    try:
        role = iam.get_role(RoleName=name)["Role"]
        if _document(role["AssumeRolePolicyDocument"]) != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            trust_updated = True
    except Exception as e:
        if error_code(e) != _NOT_FOUND:
            raise
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), Tags=_tags(),
                        Description="orch: the role a training instance runs with (orch init)")
        role_created = True

    try:
        current = _document(iam.get_role_policy(RoleName=name, PolicyName=INLINE_POLICY)["PolicyDocument"])
    except Exception as e:
        if error_code(e) != _NOT_FOUND:
            raise
        current = None
    if policy is None:
        state = "none" if current is None else "kept"
    else:
        state = "created" if current is None else "unchanged" if current == policy else "updated"
        if state != "unchanged":
            iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY, PolicyDocument=json.dumps(policy))

    profile_created = added = False
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except Exception as e:
        if error_code(e) != _NOT_FOUND:
            raise
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=_tags())["InstanceProfile"]
        profile_created = True
    if name not in [r["RoleName"] for r in profile.get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        added = True
    return RoleSetup(name, name, role_created, trust_updated, state, profile_created, added)


def role_policy(region: str, name: str) -> dict | None:
    """The role's inline policy (`INLINE_POLICY`), or None when it has none (or there is no such role)."""
    try:
        return _document(client("iam", region).get_role_policy(RoleName=name, PolicyName=INLINE_POLICY)["PolicyDocument"])
    except Exception as e:
        if error_code(e) != _NOT_FOUND:
            raise
        return None


def instance_profile_roles(region: str, name: str) -> list[str] | None:
    """The roles in instance profile `name`; None when there is no such profile."""
    try:
        profile = client("iam", region).get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except Exception as e:
        if error_code(e) == _NOT_FOUND:
            return None
        raise
    return [r["RoleName"] for r in profile.get("Roles", [])]
