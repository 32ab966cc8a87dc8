"""EC2 provider: a narrow set of plain functions over boto3. Never SSH; never raw dicts out.

Every resource is tagged `orch:job=<job>`, `orch:created-by=orch` and `Name=orch-<job>`: the tags
are the truth, so any function here can rebuild what a job owns from the cloud alone.

Retries: botocore's "standard" mode retries throttling, 5xx and transient network errors only,
with exponential backoff. A capacity error is not retried in place: `run_instance` moves on to
the region's next availability zone. An error that refuses spot itself (a spot quota, the spot
service-linked role) is the same in every zone: `run_instance` goes to on-demand when allowed.

Tests replace `CLIENT_FACTORY` (one function: service, region -> boto3 client) to put a fake at
the edge where moto can't answer (Service Quotas values, capacity errors).
"""
from __future__ import annotations

import difflib
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.providers.base import Instance, InstanceTypeInfo, LaunchPlan, TeardownReport, Volume

TAG_JOB = "orch:job"
TAG_CREATED_BY = "orch:created-by"
TAG_CHECKPOINT_BUCKET = "orch:checkpoint-bucket"
TAG_RECOVER = "orch:recover"
TAG_KEEP_VOLUME = "orch:keep-volume"  # on the instance and its root volume: it outlives the instance
TAG_INSTANCE_PROFILE = "orch:iam-instance-profile"  # what a resume on another laptop launches with again
CREATED_BY = "orch"
CAPACITY_ERRORS = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "Unsupported",  # the type is not offered in this AZ
    "SpotMaxPriceTooLow",
    "UnfulfillableCapacity",  # no spare spot capacity for the request
}
# Refusals of spot as such, whatever the zone: another zone can't help, on-demand can.
SPOT_REFUSED_ERRORS = {
    "MaxSpotInstanceCountExceeded",  # the account's spot vCPU quota
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted",  # the first spot request can't create its role
}
SPOT_ROLE_COMMAND = "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
GP3_BASE_IOPS, GP3_MAX_IOPS = 3000, 16000
SPOT_RECLAIMED = "Server.SpotInstanceTermination"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]


class ProviderError(RuntimeError):
    """A cloud failure the user can act on; the message says how."""


class UnknownInstanceType(ProviderError):
    def __init__(self, name: str, region: str, suggestions: list[str]):
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"Instance type {name!r} does not exist in {region}.{hint}")


class CapacityError(ProviderError):
    pass


_shared_loader: Any = None  # botocore's parsed service models, shared between sessions


def _default_client_factory(service: str, region: str) -> Any:
    import boto3
    import botocore.session
    from botocore.config import Config

    global _shared_loader
    botocore_session = botocore.session.get_session()
    if _shared_loader is None:
        _shared_loader = botocore_session.get_component("data_loader")
    else:
        botocore_session.register_component("data_loader", _shared_loader)

    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=60,
        user_agent_extra="orch",
    )
    return boto3.session.Session(botocore_session=botocore_session).client(service, config=config)


CLIENT_FACTORY: Callable[[str, str], Any] = _default_client_factory
_cache: dict[tuple, Any] = {}


def client(service: str, region: str) -> Any:
    """A boto3 client (cached per service, region, endpoint and factory)."""
    key = (service, region, os.environ.get("AWS_ENDPOINT_URL"), CLIENT_FACTORY)
    if key not in _cache:
        _cache[key] = CLIENT_FACTORY(service, region)
    return _cache[key]


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def no_credentials(exc: BaseException) -> bool:
    """Whether AWS could not be asked because this machine has no (or partial) credentials."""
    from botocore import exceptions as bx

    return isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError))


def friendly_error(exc: BaseException) -> str | None:
    """A user-facing message for the botocore errors everyone meets, else None."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return "No AWS credentials found. Run `aws configure` (or set AWS_PROFILE), then `orch doctor`."
    if isinstance(exc, bx.EndpointConnectionError):
        return f"Cannot reach AWS ({exc}). Check the network and the region, then `orch doctor`."
    if isinstance(exc, bx.ClientError):
        code = error_code(exc)
        msg = exc.response.get("Error", {}).get("Message", "")
        if code == "AuthFailure.ServiceLinkedRoleCreationNotPermitted":
            return (f"AWS refused the spot request: this account has no spot service-linked role yet, and you "
                    f"may not create it ({msg}). Create it once (an admin, or add iam:CreateServiceLinkedRole "
                    f"from infra/iam-policy.json):\n  {SPOT_ROLE_COMMAND}\nor launch with --on-demand "
                    "(or --on-demand-fallback).")
        if code == "MaxSpotInstanceCountExceeded":
            return (f"AWS refused the spot request: spot quota reached ({code}: {msg}). Run `orch doctor --spot` "
                    "for the quota and the command that raises it, or launch with --on-demand (or "
                    "--on-demand-fallback).")
        if code in ("AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                    "UnrecognizedClientException", "RequestExpired"):
            return f"AWS rejected the credentials ({code}: {msg}). Refresh them (`aws sso login` or `aws configure`)."
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            return (f"AWS denied an operation ({code}: {msg}). Attach the policy in infra/ to "
                    "your IAM user or role.")
        if code == "VcpuLimitExceeded":
            return (f"AWS refused the launch: vCPU quota exceeded ({msg}). Run `orch doctor` for "
                    "the quota and the command that raises it.")
        return f"AWS error {code}: {msg}"
    return None


def _tags(job: str) -> list[dict[str, str]]:
    return [
        {"Key": TAG_JOB, "Value": job},
        {"Key": TAG_CREATED_BY, "Value": CREATED_BY},
        {"Key": "Name", "Value": resource_name(job)},
    ]


def _tag_spec(resource_type: str, job: str) -> dict:
    return {"ResourceType": resource_type, "Tags": _tags(job)}


def _job_filter(job: str | None) -> list[dict]:
    if job is None:
        return [{"Name": f"tag:{TAG_CREATED_BY}", "Values": [CREATED_BY]}]
    return [{"Name": f"tag:{TAG_JOB}", "Values": [job]}]


def resource_name(job: str) -> str:
    return f"orch-{job}"


# --- AMI and instance types -------------------------------------------------------------------


@dataclass(frozen=True)
class AmiInfo:
    image_id: str
    name: str
    root_device_name: str
    source: str


def resolve_ami(region: str, ssm_parameter: str, owners: tuple[str, ...], name_pattern: str,
                override: str | None = None) -> AmiInfo:
    """`--ami` if given, else the SSM parameter, else the newest image matching the name."""
    ec2 = client("ec2", region)
    if override:
        return _describe_ami(ec2, override, "--ami")
    ssm_problem = ""
    try:
        value = client("ssm", region).get_parameter(Name=ssm_parameter)["Parameter"]["Value"]
        return _describe_ami(ec2, value, f"ssm:{ssm_parameter}")
    except Exception as e:  # not found, access denied, or no SSM: fall back to describe_images
        if error_code(e) is None and not _is_boto_error(e):
            raise
        ssm_problem = error_code(e) or type(e).__name__
    images = ec2.describe_images(
        Owners=list(owners),
        Filters=[{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}],
    )["Images"]
    if not images:
        raise ProviderError(
            f"No Deep Learning AMI found in {region}: SSM parameter {ssm_parameter} gave "
            f"{ssm_problem}, and no image named {name_pattern!r} owned by {', '.join(owners)}. "
            "Pass one explicitly with --ami ami-..."
        )
    newest = max(images, key=lambda i: i.get("CreationDate", ""))
    return AmiInfo(newest["ImageId"], newest.get("Name", ""), newest.get("RootDeviceName", "/dev/sda1"),
                   f"describe_images:{name_pattern}")


def _is_boto_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("botocore")


def _describe_ami(ec2: Any, image_id: str, source: str) -> AmiInfo:
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except Exception as e:
        if error_code(e) in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed"):
            images = []
        else:
            raise
    if not images:
        raise ProviderError(f"AMI {image_id} (from {source}) does not exist in this region. "
                            "Check --ami, or leave it out to use the Deep Learning AMI.")
    image = images[0]
    return AmiInfo(image["ImageId"], image.get("Name", ""), image.get("RootDeviceName", "/dev/sda1"), source)


def instance_type_info(region: str, instance_type: str) -> InstanceTypeInfo:
    """The type's vCPUs and GPUs; raises UnknownInstanceType with the closest valid names."""
    ec2 = client("ec2", region)
    try:
        found = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except Exception as e:
        if error_code(e) not in ("InvalidInstanceType", "InvalidParameterValue"):
            raise
        found = []
    if not found:
        raise UnknownInstanceType(instance_type, region, _closest_types(ec2, instance_type))
    t = found[0]
    gpus = t.get("GpuInfo", {}).get("Gpus", [])
    return InstanceTypeInfo(
        name=t["InstanceType"],
        vcpus=int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        gpus=sum(int(g.get("Count", 0)) for g in gpus),
        gpu_name=gpus[0].get("Name") if gpus else None,
        memory_mib=int(t.get("MemoryInfo", {}).get("SizeInMiB", 0)),
    )


def _closest_types(ec2: Any, instance_type: str) -> list[str]:
    """The nearest valid names: within the family when it exists (one small call), else all."""
    family = instance_type.split(".")[0]
    for filters in ([{"Name": "instance-type", "Values": [f"{family}.*"]}], []):
        names = []
        for page in ec2.get_paginator("describe_instance_types").paginate(Filters=filters):
            names.extend(t["InstanceType"] for t in page["InstanceTypes"])
        close = difflib.get_close_matches(instance_type, names, n=5, cutoff=0.6)
        if close:
            return close
    return []


def offered_zones(region: str, instance_type: str) -> tuple[str, ...]:
    """AZs that offer the type and have a default subnet, in name order."""
    ec2 = client("ec2", region)
    offered = {
        o["Location"]
        for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )["InstanceTypeOfferings"]
    }
    subnets = _default_subnets(region)
    return tuple(sorted(z for z in subnets if z in offered))


def _default_vpc(region: str) -> str:
    vpcs = client("ec2", region).describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(f"No default VPC in {region}. Create one with "
                            f"`aws ec2 create-default-vpc --region {region}`.")
    return vpcs[0]["VpcId"]


def _default_subnets(region: str) -> dict[str, str]:
    subnets = client("ec2", region).describe_subnets(Filters=[
        {"Name": "vpc-id", "Values": [_default_vpc(region)]},
        {"Name": "default-for-az", "Values": ["true"]},
    ])["Subnets"]
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}


# --- key pair and security group --------------------------------------------------------------


@dataclass(frozen=True)
class KeyPairInfo:
    name: str
    key_id: str | None
    created: bool


def find_key_pair(region: str, job: str) -> KeyPairInfo | None:
    pairs = client("ec2", region).describe_key_pairs(Filters=_job_filter(job))["KeyPairs"]
    return KeyPairInfo(pairs[0]["KeyName"], pairs[0].get("KeyPairId"), False) if pairs else None


def create_key_pair(region: str, job: str) -> tuple[KeyPairInfo, str]:
    """Create the job's key pair; returns it and the private key material (PEM/OpenSSH text)."""
    response = client("ec2", region).create_key_pair(
        KeyName=resource_name(job), KeyType="ed25519", KeyFormat="pem",
        TagSpecifications=[_tag_spec("key-pair", job)],
    )
    return KeyPairInfo(response["KeyName"], response.get("KeyPairId"), True), response["KeyMaterial"]


def delete_key_pair(region: str, key: KeyPairInfo) -> None:
    # By name: unique per region, and what every EC2 implementation accepts.
    client("ec2", region).delete_key_pair(KeyName=key.name)


def ensure_security_group(region: str, job: str, ssh_cidr: str) -> str:
    """The job's security group, allowing inbound SSH from `ssh_cidr` only. Idempotent."""
    ec2 = client("ec2", region)
    groups = ec2.describe_security_groups(Filters=_job_filter(job))["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
    else:
        group_id = ec2.create_security_group(
            GroupName=resource_name(job),
            Description=f"orch job {job}: SSH from the launching machine only",
            VpcId=_default_vpc(region),
            TagSpecifications=[_tag_spec("security-group", job)],
        )["GroupId"]
    try:
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                            "IpRanges": [{"CidrIp": ssh_cidr, "Description": "orch: launching machine"}]}],
        )
    except Exception as e:
        if error_code(e) != "InvalidPermission.Duplicate":
            raise
    # Launching again from another network: the old address loses access.
    stale = [c for c in ssh_ingress_cidrs(region, group_id) if c != ssh_cidr]
    if stale:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": c} for c in stale]}])
    return group_id


def ssh_ingress_cidrs(region: str, group_id: str) -> list[str]:
    group = client("ec2", region).describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return [r["CidrIp"] for p in group.get("IpPermissions", []) if p.get("FromPort") == 22
            for r in p.get("IpRanges", [])]


# --- instances --------------------------------------------------------------------------------


def _to_instance(raw: dict, region: str) -> Instance:
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
    filters = _job_filter(job)
    if not include_terminated:
        filters = filters + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    found = []
    for page in client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(_to_instance(i, region) for i in reservation["Instances"])
    return sorted(found, key=lambda i: i.launched_at or "", reverse=True)


def describe_instance(region: str, instance_id: str) -> Instance | None:
    try:
        reservations = client("ec2", region).describe_instances(InstanceIds=[instance_id])["Reservations"]
    except Exception as e:
        if error_code(e) == "InvalidInstanceID.NotFound":
            return None
        raise
    for reservation in reservations:
        for raw in reservation["Instances"]:
            return _to_instance(raw, region)
    return None


def gp3_iops(throughput_mibs: int) -> int:
    """gp3 needs at least 4 IOPS per MiB/s of throughput; 3000 is the free baseline."""
    return min(GP3_MAX_IOPS, max(GP3_BASE_IOPS, 4 * throughput_mibs))


def _client_token(job: str, zone: str, market: str, nonce: str) -> str:
    # EC2 caps it at 64 characters: a digest keeps the nonce whole however long the job and zone names are.
    digest = hashlib.sha256(f"{job}|{zone}|{market}|{nonce}".encode()).hexdigest()[:32]
    return f"orch-{job[:20]}-{digest}"


def run_instance(plan: LaunchPlan, security_group_id: str, log: Callable[[str], None] = lambda _: None,
                 on_demand_user_data: str | None = None) -> Instance:
    """Start the job's instance: each AZ in turn on a capacity error; spot, then on-demand if allowed.

    `on_demand_user_data` replaces the plan's user data on the on-demand attempts after spot (its
    --max-dollars cap counts at the on-demand price); None: the plan's.
    """
    ec2 = client("ec2", plan.region)
    subnets = _default_subnets(plan.region)
    zones = [z for z in plan.zones if z in subnets]
    if not zones:
        raise CapacityError(f"{plan.instance_type} is not offered in any AZ of {plan.region} with a "
                            "default subnet. Try another region with --region.")
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
                SecurityGroupIds=[security_group_id],
                SubnetId=subnets[zone],
                Placement={"AvailabilityZone": zone},
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
                    {"ResourceType": "instance", "Tags": _tags(plan.job) + [{"Key": k, "Value": v} for k, v in plan.tags]},
                    {"ResourceType": "volume", "Tags": _tags(plan.job) + (
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
            try:
                raw = ec2.run_instances(**params)["Instances"][0]
            except Exception as e:
                code = error_code(e)
                if spot and code in SPOT_REFUSED_ERRORS and len(markets) > 1:
                    failures.append(f"{zone} spot: {code}")
                    log(f"spot refused in {zone} ({code}): every zone would say the same")
                    spot_refused = True
                    break
                if code not in CAPACITY_ERRORS:
                    raise
                market = "spot" if spot else "on-demand"
                failures.append(f"{zone} {market}: {code}")
                log(f"no {market} capacity for {plan.instance_type} in {zone} ({code}); trying the next zone")
                continue
            return _to_instance(raw, plan.region)
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
            raise ProviderError(f"Instance {instance_id} terminated while starting (spot reclaimed, "
                                "or a failed boot). Run `orch launch` again to start a new one.")
        if time.monotonic() > deadline:
            now = instance.state if instance else "not found"
            raise ProviderError(f"Instance {instance_id} is still {now} after {timeout_s:.0f}s. It is "
                                "tagged and recorded: run the same `orch launch` again to resume, "
                                "or `orch teardown` to remove it.")
        time.sleep(poll_s)


def terminate_job(region: str, job: str, keep_volume: bool = False, timeout_s: float = 600,
                  poll_s: float = 3.0, log: Callable[[str], None] = lambda _: None) -> TeardownReport:
    """Terminate every instance tagged for the job, wait, then delete its SG and key pair."""
    ec2 = client("ec2", region)
    warnings: list[str] = []
    kept: list[str] = [v for vs in keep_root_volumes(region, job).values() for v in vs] if keep_volume else []
    ids = [i.instance_id for i in find_instances(region, job)]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
        for instance_id in ids:
            wait_for_state(region, instance_id, {"terminated"}, timeout_s, poll_s)
        log(f"terminated {', '.join(ids)}")
    # Volumes that outlived an instance (launched with --keep-volume, then reclaimed or stopped).
    deleted_volumes: list[str] = []
    for volume in _detached_volumes(region, job, min(timeout_s, 120), poll_s):
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
    for group in ec2.describe_security_groups(Filters=_job_filter(job))["SecurityGroups"]:
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
    keys = []
    for pair in ec2.describe_key_pairs(Filters=_job_filter(job))["KeyPairs"]:
        delete_key_pair(region, KeyPairInfo(pair["KeyName"], pair.get("KeyPairId"), False))
        keys.append(pair["KeyName"])
    remaining = [r for r in remaining_resources(region, job) if r.split(" ", 1)[-1] not in kept]
    return TeardownReport(job=job, terminated=tuple(ids), security_groups=tuple(groups),
                          key_pairs=tuple(keys), volumes=tuple(deleted_volumes), kept_volumes=tuple(kept),
                          remaining=tuple(remaining), warnings=tuple(warnings))


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
            if not _is_boto_error(e):
                raise
            raise ProviderError(
                f"Could not keep the root volume {', '.join(volumes) or '?'} of {instance.instance_id} "
                f"({friendly_error(e) or e}). Nothing was terminated, so the volume is still there. Allow "
                f"ec2:ModifyInstanceAttribute on the job's instances (infra/iam-policy.json) and run `orch teardown "
                f"{job} --keep-volume` again, or leave out --keep-volume to delete the volume with the instance."
            ) from None
        kept[instance.instance_id] = volumes
    return kept


def _to_volume(raw: dict) -> Volume:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    attached = [a["InstanceId"] for a in raw.get("Attachments", []) if a.get("State") in ("attaching", "attached")]
    created = raw.get("CreateTime")
    return Volume(volume_id=raw["VolumeId"], job=tags.get(TAG_JOB, ""), state=raw.get("State", "unknown"),
                  zone=raw.get("AvailabilityZone", ""), size_gb=int(raw.get("Size", 0)),
                  attached_to=attached[0] if attached else None, kept=tags.get(TAG_KEEP_VOLUME) == "on",
                  created_at=created.isoformat() if hasattr(created, "isoformat") else created)


def job_volumes(region: str, job: str) -> list[Volume]:
    """The EBS volumes tagged for the job (deleted ones left out)."""
    raw = client("ec2", region).describe_volumes(Filters=_job_filter(job))["Volumes"]
    return [_to_volume(v) for v in raw if v.get("State") not in ("deleting", "deleted")]


def kept_volumes(region: str, job: str, wait_s: float = 0, poll_s: float = 3.0) -> list[Volume]:
    """The job's volumes attached to no instance (what a --keep-volume job leaves), newest first.

    wait_s: first wait up to that long for volumes still detaching from a terminated instance (a
    spot reclaim's root volume is "in-use" for a while after the instance is gone).
    """
    available = _detached_volumes(region, job, wait_s, poll_s)
    return sorted(available, key=lambda v: v.created_at or "", reverse=True)


def get_volume(region: str, volume_id: str) -> Volume | None:
    try:
        raw = client("ec2", region).describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except Exception as e:
        if error_code(e) == "InvalidVolume.NotFound":
            return None
        raise
    return _to_volume(raw[0]) if raw else None


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


def _detached_volumes(region: str, job: str, timeout_s: float, poll_s: float) -> list[Volume]:
    """The job's volumes once none is still detaching from a terminated instance."""
    deadline = time.monotonic() + timeout_s
    while True:
        volumes = job_volumes(region, job)
        busy = [v for v in volumes if v.state == "in-use" and not _live(region, v.attached_to)]
        if not busy or time.monotonic() > deadline:
            return [v for v in volumes if v.state == "available"]
        time.sleep(poll_s)


def _live(region: str, instance_id: str | None) -> bool:
    instance = describe_instance(region, instance_id) if instance_id else None
    return instance is not None and instance.state != "terminated"


def remaining_resources(region: str, job: str) -> list[str]:
    """Everything still tagged for the job: 'instance i-..', 'security-group sg-..', ..."""
    ec2 = client("ec2", region)
    left = [f"instance {i.instance_id}" for i in find_instances(region, job)]
    left += [f"security-group {g['GroupId']}"
             for g in ec2.describe_security_groups(Filters=_job_filter(job))["SecurityGroups"]]
    left += [f"key-pair {k['KeyName']}" for k in ec2.describe_key_pairs(Filters=_job_filter(job))["KeyPairs"]]
    left += [f"volume {v['VolumeId']}" for v in ec2.describe_volumes(Filters=_job_filter(job))["Volumes"]
             if v.get("State") not in ("deleting", "deleted")]
    return left


def running_vcpus(region: str, families: tuple[str, ...], spot: bool) -> int:
    """vCPUs of this account's pending/running instances in the given families (for quota checks)."""
    total = 0
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    for page in client("ec2", region).get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for raw in reservation["Instances"]:
                family = raw.get("InstanceType", "").split(".")[0]
                if not family.startswith(families) or (raw.get("InstanceLifecycle") == "spot") != spot:
                    continue
                cpu = raw.get("CpuOptions", {})
                total += int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1))
    return total


def caller_identity(region: str) -> str:
    return client("sts", region).get_caller_identity()["Arn"]
