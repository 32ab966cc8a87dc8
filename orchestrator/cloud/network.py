"""Where instances go (the default VPC, or a subnet given), and a job's key pair and security group (SSH
from one address only)."""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.cloud.aws import ProviderError, client, error_code, job_filter, resource_name, tag_spec


@dataclass(frozen=True)
class Network:
    """Where a job's instance goes: a VPC, its subnet per zone, and whether to ask for a public address."""

    vpc_id: str
    subnets: tuple[tuple[str, str], ...]  # (zone, subnet id)
    public_ip: bool = False  # AssociatePublicIpAddress: the subnet gives none, and SSH goes to the address
    described: str = "default VPC"


def default_vpc(region: str) -> str:
    vpcs = client("ec2", region).describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ProviderError(f"No default VPC in {region} (many organisation accounts have none). Pass --subnet-id "
                            "SUBNET (a subnet of one of your VPCs; or subnet_id in config.toml), or create a "
                            f"default VPC with `aws ec2 create-default-vpc --region {region}`. Nothing was created.")
    return vpcs[0]["VpcId"]


def default_subnets(region: str, vpc_id: str) -> dict[str, str]:
    subnets = client("ec2", region).describe_subnets(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "default-for-az", "Values": ["true"]},
    ])["Subnets"]
    return {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}


def network_for(region: str, subnet_id: str | None, via_proxy: bool) -> Network:
    """The default VPC's subnets, or the one subnet given (a public address asked for when it gives none
    and SSH goes straight to the instance)."""
    if not subnet_id:
        vpc = default_vpc(region)
        return Network(vpc, tuple(sorted(default_subnets(region, vpc).items())))
    try:
        found = client("ec2", region).describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    except Exception as e:
        if error_code(e) not in ("InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"):
            raise
        found = []
    if not found:
        raise ProviderError(f"--subnet-id {subnet_id}: no such subnet in {region}. `aws ec2 describe-subnets "
                            f"--region {region}` lists yours. Nothing was created.")
    s = found[0]
    public = not s.get("MapPublicIpOnLaunch", False) and not via_proxy
    how = ("the subnet gives public addresses" if s.get("MapPublicIpOnLaunch") else
           "reached through the proxy command" if via_proxy else "a public address asked for")
    return Network(s["VpcId"], ((s["AvailabilityZone"], s["SubnetId"]),), public,
                   f"{s['SubnetId']} ({s['VpcId']}, {s['AvailabilityZone']}; {how})")


# --- key pair and security group --------------------------------------------------------------


@dataclass(frozen=True)
class KeyPairInfo:
    name: str
    key_id: str | None
    created: bool


def find_key_pair(region: str, job: str) -> KeyPairInfo | None:
    pairs = client("ec2", region).describe_key_pairs(Filters=job_filter(job))["KeyPairs"]
    return KeyPairInfo(pairs[0]["KeyName"], pairs[0].get("KeyPairId"), False) if pairs else None


def create_key_pair(region: str, job: str) -> tuple[KeyPairInfo, str]:
    """Create the job's key pair; returns it and the private key material (PEM/OpenSSH text)."""
    response = client("ec2", region).create_key_pair(
        KeyName=resource_name(job), KeyType="ed25519", KeyFormat="pem",
        TagSpecifications=[tag_spec("key-pair", job)],
    )
    return KeyPairInfo(response["KeyName"], response.get("KeyPairId"), True), response["KeyMaterial"]


def delete_key_pair(region: str, key: KeyPairInfo) -> None:
    # By name: unique per region, and what every EC2 implementation accepts.
    client("ec2", region).delete_key_pair(KeyName=key.name)


def ensure_security_group(region: str, job: str, ssh_cidr: str, vpc_id: str | None = None) -> str:
    """The job's security group in `vpc_id` (None: the default VPC), inbound SSH from `ssh_cidr` only. Idempotent."""
    ec2 = client("ec2", region)
    groups = ec2.describe_security_groups(Filters=job_filter(job))["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
    else:
        group_id = ec2.create_security_group(
            GroupName=resource_name(job),
            Description=f"orch job {job}: SSH from the launching machine only",
            VpcId=vpc_id or default_vpc(region),
            TagSpecifications=[tag_spec("security-group", job)],
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
