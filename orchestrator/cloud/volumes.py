"""EBS volumes a job keeps (`--keep-volume`): find them, keep them at teardown, attach and detach them."""
from __future__ import annotations

import time

from orchestrator.cloud.aws import (
    TAG_JOB,
    TAG_KEEP_VOLUME,
    ProviderError,
    client,
    error_code,
    friendly_error,
    is_boto_error,
    job_filter,
)
from orchestrator.cloud.instances import find_instances, is_live
from orchestrator.records import Volume


def keep_root_volumes(region: str, job: str) -> dict[str, list[str]]:
    """Make the root volume of each of the job's instances outlive it; instance id -> its root volume ids.

    Raises ProviderError when AWS refuses, before anything is terminated: terminating then would
    delete the volume the user asked to keep.
    """
    ec2 = client("ec2", region)
    kept: dict[str, list[str]] = {}
    for instance in find_instances(region, job):
        raw = ec2.describe_instances(InstanceIds=[instance.instance_id])["Reservations"][0]["Instances"][0]
        root = raw.get("RootDeviceName")
        mappings = [m for m in raw.get("BlockDeviceMappings", []) if m.get("DeviceName") == root and "Ebs" in m]
        volumes = [m["Ebs"]["VolumeId"] for m in mappings]
        if mappings and all(m["Ebs"].get("DeleteOnTermination") is False for m in mappings):
            kept[instance.instance_id] = volumes  # launched with --keep-volume: nothing to change
            continue
        try:
            ec2.modify_instance_attribute(InstanceId=instance.instance_id, BlockDeviceMappings=[
                {"DeviceName": root, "Ebs": {"DeleteOnTermination": False}}])
        except Exception as e:
            if not is_boto_error(e):
                raise
            raise ProviderError(
                f"Could not keep the root volume {', '.join(volumes) or '?'} of {instance.instance_id} "
                f"({friendly_error(e) or e}). Nothing was terminated, so the volume is still there. Allow "
                f"ec2:ModifyInstanceAttribute on the job's instances (infra/iam-policy.json) and run `orch teardown "
                f"{job} --keep-volume` again, or leave out --keep-volume to delete the volume with the instance."
            ) from None
        kept[instance.instance_id] = volumes
    return kept


def to_volume(raw: dict) -> Volume:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    attached = [a["InstanceId"] for a in raw.get("Attachments", []) if a.get("State") in ("attaching", "attached")]
    created = raw.get("CreateTime")
    return Volume(volume_id=raw["VolumeId"], job=tags.get(TAG_JOB, ""), state=raw.get("State", "unknown"),
                  zone=raw.get("AvailabilityZone", ""), size_gb=int(raw.get("Size", 0)),
                  attached_to=attached[0] if attached else None, kept=tags.get(TAG_KEEP_VOLUME) == "on",
                  created_at=created.isoformat() if hasattr(created, "isoformat") else created)


def job_volumes(region: str, job: str) -> list[Volume]:
    """The EBS volumes tagged for the job (deleted ones left out)."""
    raw = client("ec2", region).describe_volumes(Filters=job_filter(job))["Volumes"]
    return [to_volume(v) for v in raw if v.get("State") not in ("deleting", "deleted")]


def kept_volumes(region: str, job: str, wait_s: float = 0, poll_s: float = 3.0) -> list[Volume]:
    """The job's volumes attached to no instance (what a --keep-volume job leaves), newest first.

    wait_s: first wait up to that long for volumes still detaching from a terminated instance (a
    spot reclaim's root volume is "in-use" for a while after the instance is gone).
    """
    available = detached_volumes(region, job, wait_s, poll_s)
    return sorted(available, key=lambda v: v.created_at or "", reverse=True)


def get_volume(region: str, volume_id: str) -> Volume | None:
    try:
        raw = client("ec2", region).describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except Exception as e:
        if error_code(e) == "InvalidVolume.NotFound":
            return None
        raise
    return to_volume(raw[0]) if raw else None


def _volume_attachment(region: str, volume_id: str, instance_id: str) -> str | None:
    raw = client("ec2", region).describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    states = [a.get("State") for a in raw.get("Attachments", []) if a.get("InstanceId") == instance_id]
    return states[0] if states else None


def _wait_attachment(region: str, volume_id: str, instance_id: str, wanted: str | None, timeout_s: float,
                     poll_s: float, stuck: str) -> None:
    """Poll until the volume's attachment to the instance is `wanted` ("attached", or None: none)."""
    deadline = time.monotonic() + timeout_s
    while _volume_attachment(region, volume_id, instance_id) != wanted:
        if time.monotonic() > deadline:
            raise ProviderError(f"Volume {volume_id} is still {stuck} {instance_id} after {timeout_s:.0f}s"
                                + (". It is tagged: `orch teardown` removes it, or run the same `orch launch` again."
                                   if wanted else "; `orch teardown` deletes it with the instance."))
        time.sleep(poll_s)


def attach_volume(region: str, volume_id: str, instance_id: str, device: str = "/dev/sdf",
                  timeout_s: float = 300, poll_s: float = 3.0) -> None:
    """Attach the volume to the instance as a second disk and wait until it is attached."""
    client("ec2", region).attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
    _wait_attachment(region, volume_id, instance_id, "attached", timeout_s, poll_s, "not attached to")


def detach_volume(region: str, volume_id: str, instance_id: str, timeout_s: float = 300,
                  poll_s: float = 3.0) -> None:
    """Detach the volume from the instance and wait until it is available again."""
    client("ec2", region).detach_volume(VolumeId=volume_id, InstanceId=instance_id)
    _wait_attachment(region, volume_id, instance_id, None, timeout_s, poll_s, "attached to")


def detached_volumes(region: str, job: str, timeout_s: float, poll_s: float) -> list[Volume]:
    """The job's volumes once none is still detaching from a terminated instance."""
    deadline = time.monotonic() + timeout_s
    while True:
        volumes = job_volumes(region, job)
        busy = [v for v in volumes if v.state == "in-use" and not is_live(region, v.attached_to)]
        if not busy or time.monotonic() > deadline:
            return [v for v in volumes if v.state == "available"]
        time.sleep(poll_s)
