"""A `--nodes N` job's cluster placement group (its instances close together on the network), and its
security group's rule that lets them reach each other.

A cluster placement group keeps the instances in one zone, on low-latency links: what NCCL's
all-reduce over TCP between nodes wants. Not every type can join one: the type's own
`PlacementGroupInfo` (DescribeInstanceTypes, read by cloud/catalog.py) says so, and a type without it runs its
nodes unplaced.
"""
from __future__ import annotations

from orchestrator.cloud.aws import ProviderError, client, error_code, job_filter, resource_name, tag_spec

STRATEGY = "cluster"  # what cloud/catalog.py checks the type supports


def find_placement_groups(region: str, job: str) -> list[str]:
    """The names of the placement groups tagged for the job."""
    groups = client("ec2", region).describe_placement_groups(Filters=job_filter(job))["PlacementGroups"]
    return [g["GroupName"] for g in groups if g.get("State") not in ("deleting", "deleted")]


def ensure_placement_group(region: str, job: str) -> str:
    """The job's cluster placement group, made once and tagged. Idempotent."""
    found = find_placement_groups(region, job)
    if found:
        return found[0]
    name = resource_name(job)
    try:
        client("ec2", region).create_placement_group(GroupName=name, Strategy=STRATEGY,
                                                     TagSpecifications=[tag_spec("placement-group", job)])
    except Exception as e:
        if error_code(e) != "InvalidPlacementGroup.Duplicate":
            raise
        raise ProviderError(f"A placement group named {name} exists in {region} and is not tagged for job {job} "
                            "(someone else's, or one still being deleted). Nothing was started: wait a minute, "
                            "or choose another --name.") from None
    return name


def delete_placement_groups(region: str, job: str) -> list[str]:
    """Delete the job's placement groups (its instances already terminated); the names deleted."""
    deleted = []
    for name in find_placement_groups(region, job):
        try:
            client("ec2", region).delete_placement_group(GroupName=name)
        except Exception as e:
            if error_code(e) != "InvalidPlacementGroup.Unknown":
                raise
        deleted.append(name)
    return deleted


def allow_members(region: str, group_id: str) -> None:
    """Let the group's instances reach each other on every port (the training processes' rendezvous, NCCL and
    Gloo pick their ports as they run): a rule that names the group itself, so nothing outside it gains access."""
    try:
        client("ec2", region).authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
            "IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id, "Description": "orch: the job's nodes"}]}])
    except Exception as e:
        if error_code(e) != "InvalidPermission.Duplicate":
            raise
