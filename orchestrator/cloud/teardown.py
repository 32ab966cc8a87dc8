"""Remove everything tagged for a job (auto scaling group and launch template, and the spec its group names,
instances, security group, key pair, placement group, volumes) and say what is left."""
from __future__ import annotations

import time
from typing import Callable

from orchestrator.cloud import job_specs
from orchestrator.cloud.aws import client, error_code, friendly_error, is_boto_error, job_filter
from orchestrator.cloud.groups import delete_group, find_group, find_launch_templates
from orchestrator.cloud.instances import find_instances, wait_for_state
from orchestrator.cloud.network import KeyPairInfo, delete_key_pair
from orchestrator.cloud.placement import delete_placement_groups, find_placement_groups
from orchestrator.cloud.volumes import detached_volumes, keep_root_volumes
from orchestrator.records import TeardownReport


def terminate_job(region: str, job: str, keep_volume: bool = False, timeout_s: float = 600,
                  poll_s: float = 3.0, log: Callable[[str], None] = lambda _: None,
                  spec_folder: str | None = None) -> TeardownReport:
    """Terminate every instance tagged for the job, wait, then delete its SG and key pair. A managed job's spec
    folder is the one its group's tag names, else `spec_folder` (the local cache's, for a group already gone)."""
    ec2 = client("ec2", region)
    warnings: list[str] = []
    kept: list[str] = [v for vs in keep_root_volumes(region, job).values() for v in vs] if keep_volume else []
    # A managed job's group first: it would replace an instance terminated under it. Its spec before it (a replacement
    # started meanwhile finds none and starts nothing): so a teardown cut short leaves no spec behind the group.
    group = optional("an auto scaling group", job, warnings, None, lambda: find_group(region, job))
    folder = (group.spec_folder if group else None) or spec_folder
    specs = delete_spec_folder(region, job, folder, warnings) if folder else []
    scaling, templates = optional("an auto scaling group or launch template", job, warnings, ([], []),
                                  lambda: delete_group(region, job, min(timeout_s, 300), poll_s))
    if scaling or templates:
        log(f"deleted auto scaling group {', '.join(scaling) or '-'}, launch template {', '.join(templates) or '-'}")
    ids = [i.instance_id for i in find_instances(region, job)]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
        for instance_id in ids:
            wait_for_state(region, instance_id, {"terminated"}, timeout_s, poll_s)
        log(f"terminated {', '.join(ids)}")
    # Volumes that outlived an instance (launched with --keep-volume, then reclaimed or stopped).
    deleted_volumes: list[str] = []
    for volume in detached_volumes(region, job, min(timeout_s, 120), poll_s):
        if keep_volume:
            if volume.volume_id not in kept:
                kept.append(volume.volume_id)
            continue
        try:
            ec2.delete_volume(VolumeId=volume.volume_id)
            deleted_volumes.append(volume.volume_id)
        except Exception as e:
            if error_code(e) != "InvalidVolume.NotFound":
                warnings.append(f"could not delete volume {volume.volume_id}: {e}")
    if deleted_volumes:
        log(f"deleted kept volume(s) {', '.join(deleted_volumes)}")
    groups = []
    for group in ec2.describe_security_groups(Filters=job_filter(job))["SecurityGroups"]:
        # ENIs of a just-terminated instance can hold the group for a few seconds.
        deadline = time.monotonic() + min(timeout_s, 120)
        while True:
            try:
                ec2.delete_security_group(GroupId=group["GroupId"])
                groups.append(group["GroupId"])
                break
            except Exception as e:
                if error_code(e) != "DependencyViolation" or time.monotonic() > deadline:
                    warnings.append(f"could not delete security group {group['GroupId']}: {e}")
                    break
                time.sleep(poll_s)
    # A --nodes job's: empty once its instances are gone.
    placement_groups = optional("a placement group", job, warnings, [], lambda: delete_placement_groups(region, job))
    keys = []
    for pair in ec2.describe_key_pairs(Filters=job_filter(job))["KeyPairs"]:
        delete_key_pair(region, KeyPairInfo(pair["KeyName"], pair.get("KeyPairId"), False))
        keys.append(pair["KeyName"])
    remaining = [r for r in remaining_resources(region, job) if r.split(" ", 1)[-1] not in kept]
    return TeardownReport(job=job, terminated=tuple(ids), security_groups=tuple(groups),
                          key_pairs=tuple(keys), placement_groups=tuple(placement_groups),
                          auto_scaling_groups=tuple(scaling), launch_templates=tuple(templates),
                          bucket_objects=tuple(specs),
                          volumes=tuple(deleted_volumes), kept_volumes=tuple(kept),
                          remaining=tuple(remaining), warnings=tuple(warnings))


def remaining_resources(region: str, job: str) -> list[str]:
    """Everything still tagged for the job: 'instance i-..', 'security-group sg-..', ..."""
    ec2 = client("ec2", region)
    left = [f"instance {i.instance_id}" for i in find_instances(region, job)]
    left += [f"security-group {g['GroupId']}"
             for g in ec2.describe_security_groups(Filters=job_filter(job))["SecurityGroups"]]
    left += [f"key-pair {k['KeyName']}" for k in ec2.describe_key_pairs(Filters=job_filter(job))["KeyPairs"]]
    # What an older policy may not let orch look for (already said by the teardown): not a failure of its own.
    left += [f"placement-group {name}" for name in optional("", job, None, [], lambda: find_placement_groups(region, job))]
    group = optional("", job, None, None, lambda: find_group(region, job, deleting=True))
    left += [f"auto-scaling-group {group.name}"] if group else []
    left += [f"launch-template {t}" for t in optional("", job, None, [], lambda: find_launch_templates(region, job))]
    left += [f"volume {v['VolumeId']}" for v in ec2.describe_volumes(Filters=job_filter(job))["Volumes"]
             if v.get("State") not in ("deleting", "deleted")]
    return left


def delete_spec_folder(region: str, job: str, folder: str, warnings: list[str]) -> list[str]:
    """A managed job's spec and orch's package (never its checkpoints); only a folder named for the job."""
    if not folder.startswith("s3://") or not folder.endswith(f"/orch-jobs/{job}"):
        warnings.append(f"not deleting {folder}: the group's tag orch:spec does not name orch-jobs/{job}")
        return []
    try:
        return [f"{folder}/{key.rsplit('/', 1)[-1]}" for key in job_specs.delete_folder(region, folder)]
    except Exception as e:
        if not is_boto_error(e):
            raise
        warnings.append(f"could not delete {folder}/ (the job's spec and orch's package): {friendly_error(e) or e}")
        return []


def optional(what: str, job: str, warnings: list[str] | None, default, call: Callable):
    """A look for what only some jobs have (a placement group, an auto scaling group), which a policy from before
    they existed may not allow: its refusal is a warning (when `warnings` is given), never a failed teardown."""
    try:
        return call()
    except Exception as e:
        if not type(e).__module__.startswith("botocore"):
            raise
        if warnings is not None:
            warnings.append(f"could not look for {what} of {job} ({error_code(e) or type(e).__name__}); if it has "
                            "one, delete it in the AWS console. infra/iam-policy.json allows orch to (update your "
                            "policy from it)")
        return default
