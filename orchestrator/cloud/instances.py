"""A job's instances: run one (zone by zone, spot with on-demand fallback), find them by tag, wait for a state."""
from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Callable

from orchestrator.cloud.aws import (
    CAPACITY_ERRORS,
    GP3_BASE_IOPS,
    GP3_MAX_IOPS,
    LIVE_STATES,
    SPOT_REFUSED_ERRORS,
    SPOT_REQUEST_PERMISSION,
    SPOT_UNAUTHORIZED,
    TAG_JOB,
    TAG_KEEP_VOLUME,
    CapacityError,
    ProviderError,
    client,
    error_code,
    job_filter,
    tags_for,
)
from orchestrator.records import Instance, LaunchPlan

# --- instances --------------------------------------------------------------------------------


def to_instance(raw: dict, region: str) -> Instance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    launched = raw.get("LaunchTime")
    return Instance(
        job=tags.get(TAG_JOB, ""),
        provider="ec2",
        instance_id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", "unknown"),
        instance_type=raw.get("InstanceType", ""),
        region=region,
        zone=raw.get("Placement", {}).get("AvailabilityZone"),
        public_ip=raw.get("PublicIpAddress"),
        private_ip=raw.get("PrivateIpAddress"),
        spot=raw.get("InstanceLifecycle") == "spot",
        launched_at=launched.isoformat() if hasattr(launched, "isoformat") else launched,
        state_reason=raw.get("StateReason", {}).get("Code"),
        tags={k: v for k, v in tags.items() if k.startswith("orch:")},
    )


def find_instances(region: str, job: str | None = None, include_terminated: bool = False) -> list[Instance]:
    """Instances tagged for `job` (or every orch instance when job is None), newest first."""
    filters = job_filter(job)
    if not include_terminated:
        filters = filters + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    found = []
    for page in client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(to_instance(i, region) for i in reservation["Instances"])
    return sorted(found, key=lambda i: i.launched_at or "", reverse=True)


def usable_instances(region: str, job: str, timeout_s: float, poll_s: float) -> list[Instance]:
    """The job's instances a launch may keep, newest first: one shutting down (a reclaim) is waited out, not kept."""
    kept = []
    for found in find_instances(region, job):
        if found.state == "shutting-down":  # going away: wait, then a fresh one replaces it
            wait_for_state(region, found.instance_id, {"terminated"}, timeout_s, poll_s)
        else:
            kept.append(found)
    return kept


def start_if_stopped(region: str, instance: Instance, timeout_s: float, poll_s: float) -> None:
    """A stopped (or stopping) instance of the job, started again."""
    if instance.state in ("stopped", "stopping"):
        wait_for_state(region, instance.instance_id, {"stopped"}, timeout_s, poll_s)
        client("ec2", region).start_instances(InstanceIds=[instance.instance_id])


def describe_instance(region: str, instance_id: str) -> Instance | None:
    try:
        reservations = client("ec2", region).describe_instances(InstanceIds=[instance_id])["Reservations"]
    except Exception as e:
        if error_code(e) == "InvalidInstanceID.NotFound":
            return None
        raise
    for reservation in reservations:
        for raw in reservation["Instances"]:
            return to_instance(raw, region)
    return None


def gp3_iops(throughput_mibs: int) -> int:
    """gp3 needs at least 4 IOPS per MiB/s of throughput; 3000 is the free baseline."""
    return min(GP3_MAX_IOPS, max(GP3_BASE_IOPS, 4 * throughput_mibs))


def _client_token(job: str, zone: str, market: str, nonce: str) -> str:
    # EC2 caps it at 64 characters: a digest keeps the nonce whole however long the job and zone names are.
    digest = hashlib.sha256(f"{job}|{zone}|{market}|{nonce}".encode()).hexdigest()[:32]
    return f"orch-{job[:20]}-{digest}"


def _interface(subnet_id: str, group_id: str, public_ip: bool) -> dict[str, Any]:
    """The instance's network: a public address is asked for on its own interface (EC2 allows it nowhere else)."""
    if public_ip:
        return {"NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [group_id],
                                       "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]}
    return {"SubnetId": subnet_id, "SecurityGroupIds": [group_id]}


def run_instance(plan: LaunchPlan, security_group_id: str, log: Callable[[str], None] = lambda _: None,
                 on_demand_user_data: str | None = None) -> Instance:
    """Start the job's instance: each AZ in turn on a capacity error; spot, then on-demand if allowed.

    `on_demand_user_data` replaces the plan's user data on the on-demand attempts after spot (its
    --max-dollars cap counts at the on-demand price); None: the plan's.
    """
    ec2 = client("ec2", plan.region)
    subnets = dict(plan.subnets)
    zones = [z for z in plan.zones if z in subnets]
    if not zones:
        raise CapacityError(f"{plan.instance_type} is not offered in any AZ of {plan.region} with a "
                            f"subnet ({plan.network}). Try another region with --region, or another --subnet-id.")
    markets = [True, False] if plan.spot and plan.allow_on_demand_fallback else [plan.spot]
    nonce = uuid.uuid4().hex[:12]
    failures: list[str] = []
    for spot in markets:
        falling_back = plan.spot and not spot
        user_data = on_demand_user_data if falling_back and on_demand_user_data is not None else plan.user_data
        spot_refused = False
        for zone in zones:
            params: dict[str, Any] = dict(
                ImageId=plan.ami,
                InstanceType=plan.instance_type,
                MinCount=1,
                MaxCount=1,
                KeyName=plan.key_name,
                **_interface(subnets[zone], security_group_id, plan.public_ip),
                Placement={"AvailabilityZone": zone, **({"GroupName": plan.placement_group} if plan.placement_group
                                                         else {})},
                BlockDeviceMappings=[{
                    "DeviceName": plan.root_device,
                    # --keep-volume: a spot reclaim or an autostop shutdown leaves the job's outputs behind.
                    "Ebs": {"VolumeSize": plan.volume_gb, "VolumeType": "gp3",
                            "Iops": gp3_iops(plan.volume_throughput), "Throughput": plan.volume_throughput,
                            "DeleteOnTermination": not plan.keep_volume},
                }],
                # `shutdown -h now` on the instance (autostop, max-hours) ends the billing.
                InstanceInitiatedShutdownBehavior="terminate",
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": tags_for(plan.job) + [{"Key": k, "Value": v} for k, v in plan.tags]},
                    {"ResourceType": "volume", "Tags": tags_for(plan.job) + (
                        [{"Key": TAG_KEEP_VOLUME, "Value": "on"}] if plan.keep_volume else [])}],
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                # The same token across botocore's own retries: a retried call can't start a second.
                ClientToken=_client_token(plan.job, zone, "spot" if spot else "od", nonce),
            )
            if user_data:
                params["UserData"] = user_data
            if plan.iam_instance_profile:
                params["IamInstanceProfile"] = {"Name": plan.iam_instance_profile}
            if spot:
                params["InstanceMarketOptions"] = {
                    "MarketType": "spot",
                    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
                }
                # The policy lets RunInstances create a spot request only when it carries the job's tag.
                params["TagSpecifications"].append({"ResourceType": "spot-instances-request", "Tags": tags_for(plan.job)})
            try:
                raw = ec2.run_instances(**params)["Instances"][0]
            except Exception as e:
                code = error_code(e)
                if spot and code == SPOT_UNAUTHORIZED and len(markets) == 1:
                    raise ProviderError(
                        f"AWS refused the spot launch ({code}). A spot launch needs one permission more than "
                        f"on-demand: {SPOT_REQUEST_PERMISSION}. Update your policy from infra/iam-policy.json "
                        "(older copies lack it), or launch with --on-demand (or --on-demand-fallback).") from e
                if spot and code in SPOT_REFUSED_ERRORS | {SPOT_UNAUTHORIZED} and len(markets) > 1:
                    failures.append(f"{zone} spot: {code}")
                    why = f"{code}: the policy may lack {SPOT_REQUEST_PERMISSION}" if code == SPOT_UNAUTHORIZED else code
                    log(f"spot refused in {zone} ({why}): every zone would say the same")
                    spot_refused = True
                    break
                if code not in CAPACITY_ERRORS:
                    raise
                market = "spot" if spot else "on-demand"
                failures.append(f"{zone} {market}: {code}")
                log(f"no {market} capacity for {plan.instance_type} in {zone} ({code}); trying the next zone")
                continue
            return to_instance(raw, plan.region)
        if spot and len(markets) > 1:
            log(f"{'spot refused' if spot_refused else 'no spot capacity in any zone'}; falling back to on-demand "
                "(allowed by settings)")
    hint = " Try --on-demand," if plan.spot and not plan.allow_on_demand_fallback else " Try"
    raise CapacityError(
        f"No capacity for {plan.instance_type} in {plan.region} ({'; '.join(failures)})."
        f"{hint} another region (--region) or another type (e.g. g5.xlarge), or retry later."
    )


def wait_for_state(region: str, instance_id: str, states: set[str], timeout_s: float,
                   poll_s: float = 3.0) -> Instance:
    deadline = time.monotonic() + timeout_s
    while True:
        instance = describe_instance(region, instance_id)
        if instance is not None and instance.state in states:
            return instance
        if instance is not None and instance.state == "terminated" and "terminated" not in states:
            raise ProviderError(f"Instance {instance_id} terminated while starting (spot reclaimed, a "
                                "failed boot, or an `orch teardown`). Run `orch launch` again to start a new one.")
        if time.monotonic() > deadline:
            now = instance.state if instance else "not found"
            raise ProviderError(f"Instance {instance_id} is still {now} after {timeout_s:.0f}s. It is "
                                "tagged and recorded: run the same `orch launch` again to resume, "
                                "or `orch teardown` to remove it.")
        time.sleep(poll_s)




def running_vcpus(region: str, counts: Callable[[str], bool], spot: bool) -> int:
    """vCPUs of this account's pending/running instances whose type `counts` (for quota checks)."""
    total = 0
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    for page in client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for raw in reservation["Instances"]:
                if not counts(raw.get("InstanceType", "")) or (raw.get("InstanceLifecycle") == "spot") != spot:
                    continue
                cpu = raw.get("CpuOptions", {})
                total += int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1))
    return total

def is_live(region: str, instance_id: str | None) -> bool:
    instance = describe_instance(region, instance_id) if instance_id else None
    return instance is not None and instance.state != "terminated"
