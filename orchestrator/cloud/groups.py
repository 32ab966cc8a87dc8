"""A managed job's machine (`orch launch --managed`, lifecycle/managed.py): an EC2 Auto Scaling group of one,
from a launch template that holds the job's user data, over the allowed types and every zone the plan may use.

AWS keeps one instance of it running: a reclaimed spot instance (or a failed one) is replaced, with
no orch process anywhere. A job that ends on purpose sets the group's desired capacity to 0 before
its instance shuts down (`stop_replacing`), so AWS does not start another. Everything is tagged
`orch:job`, and found by that tag: the group, the template, the instances and their volumes.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from orchestrator.cloud.aws import (TAG_JOB, TAG_SPEC, client, error_code, is_boto_error, job_filter, resource_name,
                                    tags_for)
from orchestrator.cloud.instances import gp3_iops
from orchestrator.records import LaunchPlan

SPOT_STRATEGY = "price-capacity-optimized"  # AWS's advice for spot: the deepest pools, then the lowest price


@dataclass(frozen=True)
class ManagedGroup:
    """A job's Auto Scaling group as AWS reports it."""

    name: str
    desired: int
    instances: tuple[str, ...]  # the ids of its instances now (replaced ones are gone from it)
    created_at: str | None = None  # ISO 8601
    launch_template_id: str | None = None
    spec_folder: str | None = None  # s3://.../orch-jobs/JOB: its spec and orch's package (tag orch:spec)


def launch_template_data(plan: LaunchPlan, security_group_id: str) -> dict:
    """What every instance of the group starts with: the plan's AMI, key, disk, role and user data; no type (the
    group's overrides give it) and no subnet (the group's zones do). A public address, when the plan's subnet gives
    none, is asked for on the interface, as run_instance does (EC2 allows it nowhere else)."""
    tags = tags_for(plan.job) + [{"Key": k, "Value": v} for k, v in plan.tags]
    network: dict = {"NetworkInterfaces": [{"DeviceIndex": 0, "Groups": [security_group_id],
                                            "AssociatePublicIpAddress": True, "DeleteOnTermination": True}]} \
        if plan.public_ip else {"SecurityGroupIds": [security_group_id]}
    data = {
        "ImageId": plan.ami,
        "KeyName": plan.key_name,
        **network,
        "BlockDeviceMappings": [{"DeviceName": plan.root_device, "Ebs": {
            "VolumeSize": plan.volume_gb, "VolumeType": "gp3", "Iops": gp3_iops(plan.volume_throughput),
            "Throughput": plan.volume_throughput, "DeleteOnTermination": True}}],
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags_for(plan.job)}],
    }
    if plan.user_data:
        data["UserData"] = base64.b64encode(plan.user_data.encode()).decode()
    if plan.iam_instance_profile:
        data["IamInstanceProfile"] = {"Name": plan.iam_instance_profile}
    return data


def ensure_group(plan: LaunchPlan, security_group_id: str, types: tuple[str, ...],
                 spec_folder: str | None = None, poll_s: float = 3.0) -> ManagedGroup:
    """The job's group of one (and its launch template), made once; the one there is otherwise. Spot over `types`
    when the plan is spot (on-demand otherwise), in every zone of the plan with a subnet; capacity rebalancing on,
    so AWS starts the replacement when it warns of a reclaim rather than after it."""
    found = find_group(plan.region, plan.job)
    if found is not None:
        return found
    wait_deleted(plan.region, plan.job, 300, poll_s)  # a teardown's, just before: AWS frees the name when it is done
    ec2 = client("ec2", plan.region)
    name = resource_name(plan.job)
    for stale in find_launch_templates(plan.region, plan.job):  # an earlier launch's, cut short: its user data
        ec2.delete_launch_template(LaunchTemplateId=stale)       # pins another spec and package
    template_id = ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData=launch_template_data(plan, security_group_id),
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags_for(plan.job)}],
    )["LaunchTemplate"]["LaunchTemplateId"]
    subnets = dict(plan.subnets)
    zones = [subnets[z] for z in plan.zones if z in subnets]
    client("autoscaling", plan.region).create_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=1, CapacityRebalance=plan.spot,
        VPCZoneIdentifier=",".join(zones),
        MixedInstancesPolicy={
            "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": template_id, "Version": "$Latest"},
                               "Overrides": [{"InstanceType": t} for t in types]},
            "InstancesDistribution": {"OnDemandBaseCapacity": 0,
                                      "OnDemandPercentageAboveBaseCapacity": 0 if plan.spot else 100,
                                      "SpotAllocationStrategy": SPOT_STRATEGY}},
        Tags=[{"Key": t["Key"], "Value": t["Value"], "PropagateAtLaunch": False} for t in tags_for(plan.job)]
        + ([{"Key": TAG_SPEC, "Value": spec_folder, "PropagateAtLaunch": False}] if spec_folder else []),
    )
    return find_group(plan.region, plan.job) or ManagedGroup(name, 1, (), None, template_id)


def find_group(region: str, job: str, deleting: bool = False) -> ManagedGroup | None:
    """The job's group, found by its name and checked by its tag (a group of that name not tagged for the job is
    someone else's); one AWS is deleting only when `deleting` (it still holds the name, and its instance)."""
    groups = client("autoscaling", region).describe_auto_scaling_groups(
        AutoScalingGroupNames=[resource_name(job)])["AutoScalingGroups"]
    for g in groups:
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        if tags.get(TAG_JOB) != job or (g.get("Status") == "Delete in progress" and not deleting):
            continue
        spec = g.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("LaunchTemplateSpecification", {})
        created = g.get("CreatedTime")
        return ManagedGroup(g["AutoScalingGroupName"], int(g.get("DesiredCapacity", 0)),
                            tuple(i["InstanceId"] for i in g.get("Instances", [])),
                            created.isoformat() if hasattr(created, "isoformat") else created,
                            spec.get("LaunchTemplateId"), tags.get(TAG_SPEC))
    return None


def find_group_if_allowed(region: str, job: str) -> ManagedGroup | None:
    """`find_group`, where a refusal (a policy from before groups, which made none) counts as no group."""
    try:
        return find_group(region, job)
    except Exception as e:
        if not is_boto_error(e):
            raise
        return None


def stop_replacing(region: str, job: str) -> bool:
    """Desired capacity 0: AWS starts no other instance (and stops the one there). False if there is no group."""
    group = find_group(region, job)
    if group is None:
        return False
    client("autoscaling", region).set_desired_capacity(AutoScalingGroupName=group.name, DesiredCapacity=0,
                                                       HonorCooldown=False)
    return True


def wait_deleted(region: str, job: str, timeout_s: float, poll_s: float) -> bool:
    """Until AWS has finished deleting the job's group (its name is free again); False if it has not by then."""
    deadline = time.monotonic() + timeout_s
    while find_group(region, job, deleting=True) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def find_launch_templates(region: str, job: str) -> list[str]:
    return [t["LaunchTemplateId"] for t in
            client("ec2", region).describe_launch_templates(Filters=job_filter(job))["LaunchTemplates"]]


def delete_group(region: str, job: str, timeout_s: float = 600, poll_s: float = 3.0) -> tuple[list[str], list[str]]:
    """Delete the job's group (its instance with it) and then its launch templates; (groups, templates) deleted."""
    groups = []
    group = find_group(region, job)
    if group is not None:
        try:
            client("autoscaling", region).delete_auto_scaling_group(AutoScalingGroupName=group.name,
                                                                    ForceDelete=True)
        except Exception as e:
            if error_code(e) != "ValidationError":  # gone already
                raise
        groups.append(group.name)
        wait_deleted(region, job, timeout_s, poll_s)
    templates = []
    for template_id in find_launch_templates(region, job):
        client("ec2", region).delete_launch_template(LaunchTemplateId=template_id)
        templates.append(template_id)
    return groups, templates


@dataclass(frozen=True)
class GroupActivity:
    """One entry of a group's activity history (AWS keeps six weeks of it)."""

    at: str  # ISO 8601
    description: str  # "Launching a new EC2 instance: i-...", "Terminating EC2 instance: i-..."
    cause: str  # AWS's words: a spot interruption, a health check, a capacity change to 0
    status: str  # Successful | InProgress | Failed | ...

    @property
    def launch(self) -> bool:
        return self.description.startswith("Launching a new EC2 instance")


def activities(region: str, job: str, limit: int = 100) -> list[GroupActivity]:
    """The job's group's activities, oldest first ([] when there is no group)."""
    found = []
    pages = client("autoscaling", region).get_paginator("describe_scaling_activities").paginate(
        AutoScalingGroupName=resource_name(job), PaginationConfig={"MaxItems": limit})
    for page in pages:
        for a in page.get("Activities", []):
            at = a.get("StartTime")
            found.append(GroupActivity(at.isoformat() if hasattr(at, "isoformat") else str(at or ""),
                                       str(a.get("Description", "")), str(a.get("Cause", "")),
                                       str(a.get("StatusCode", ""))))
    return sorted(found, key=lambda a: a.at)
