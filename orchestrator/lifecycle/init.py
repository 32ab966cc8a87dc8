"""`orch init`: the account's one-time set-up, from the policies in infra/.

Today that is the instance role and profile (`orch-trainer`) that s3:// data, checkpoint buckets and
the trainer image in ECR need: infra/instance-role-trust.json (only EC2 may assume it) and
infra/instance-role-policy.json, whose EXAMPLE-* bucket names become the user's. Running it again
changes only what differs; without buckets, it keeps those granted before.
"""
from __future__ import annotations

import copy
import json
import re

from orchestrator.cloud import iam
from orchestrator import assets
from orchestrator.config import ConfigError, Settings

ROLE = "orch-trainer"  # infra/iam-policy.json lets orch pass only roles named orch-trainer*
_DATA, _CHECKPOINTS = "EXAMPLE-DATA-BUCKET", "EXAMPLE-CHECKPOINT-BUCKET"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def infra_document(name: str) -> dict:
    return json.loads(assets.path(f"infra/{name}").read_text())


def bucket_name(value: str, flag: str) -> str:
    """`my-bucket`, `s3://my-bucket` or `s3://my-bucket/prefix` -> my-bucket; ConfigError otherwise."""
    name = value.removeprefix("s3://").split("/", 1)[0]
    if not _BUCKET.match(name) or ".." in name:
        raise ConfigError(f"{flag} {value!r}: not an S3 bucket name (3-63 characters: lowercase letters, digits, "
                          "dots and hyphens), e.g. s3://my-bucket/imagenet. Nothing was created.")
    return name


def instance_role_policy(template: dict, data_buckets: list[str], checkpoint_bucket: str | None) -> dict:
    """The template's statements for the buckets given (one copy per data bucket), and those naming no bucket."""
    statements = []
    for st in template["Statement"]:
        text = json.dumps(st)
        if _DATA in text:
            for i, bucket in enumerate(data_buckets):
                copied = json.loads(text.replace(_DATA, bucket))
                copied["Sid"] = st["Sid"].replace("ReplaceExampleDataBucketWithYours", "") + (str(i + 1) if i else "")
                statements.append(copied)
        elif _CHECKPOINTS in text:
            if checkpoint_bucket:
                copied = json.loads(text.replace(_CHECKPOINTS, checkpoint_bucket))
                copied["Sid"] = st["Sid"].replace("ReplaceExampleCheckpointBucketWithYours", "")
                statements.append(copied)
        else:
            statements.append(copy.deepcopy(st))
    return {"Version": template["Version"], "Statement": statements}


def _names_a_bucket(statement: dict) -> bool:
    resources = statement.get("Resource")
    return any(str(r).startswith("arn:aws:s3:::") for r in (resources if isinstance(resources, list) else [resources]))


def init(settings: Settings, data_buckets: tuple[str, ...] = (), checkpoint_bucket: str | None = None) -> iam.RoleSetup:
    data = list(dict.fromkeys(bucket_name(b, "--data-bucket") for b in data_buckets))
    checkpoints = bucket_name(checkpoint_bucket, "--checkpoint-bucket") if checkpoint_bucket else None
    policy = instance_role_policy(infra_document("instance-role-policy.json"), data, checkpoints)
    if not data and not checkpoints:  # no bucket given: the buckets granted before stay, the rest is brought up to date
        current = iam.role_policy(settings.region, ROLE) or {"Statement": []}
        ours = {st.get("Sid") for st in policy["Statement"]}  # the template's own (orch-datasets/ in any bucket)
        kept = [st for st in current["Statement"] if _names_a_bucket(st) and st.get("Sid") not in ours]
        policy["Statement"] = kept + policy["Statement"]
    return iam.ensure_instance_role(settings.region, ROLE, infra_document("instance-role-trust.json"), policy)


def describe(setup: iam.RoleSetup, buckets_given: bool = True) -> list[str]:
    """What `orch init` did, a line each."""
    lines = [f"role {setup.role}: " + ("created" if setup.role_created else
                                         "trust policy updated" if setup.trust_updated else "already there")]
    if buckets_given:
        done = {"created": "created", "updated": "updated to the buckets given", "unchanged": "already as asked"}
    else:
        done = {"created": "created, for the trainer image in ECR only (no bucket given: the instance may read no "
                           "S3 data; add --data-bucket, --checkpoint-bucket)",
                "updated": "its buckets kept (none given), the rest brought up to date",
                "unchanged": "kept as it was (no bucket given)"}
    lines.append(f"role policy {iam.INLINE_POLICY}: " + done[setup.policy])
    lines.append(f"instance profile {setup.profile}: " + ("created" if setup.profile_created else "already there")
                 + (f", role {setup.role} added" if setup.role_added_to_profile else ""))
    return lines
