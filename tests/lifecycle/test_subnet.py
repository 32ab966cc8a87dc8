"""Accounts without a default VPC launch into a subnet they name (`--subnet-id`, or subnet_id in config.toml):
the security group goes in that subnet's VPC, and the instance gets a public address when the subnet gives
none and SSH goes straight to it."""
from __future__ import annotations

import re

import boto3

from tests.fixtures.aws import REGION, aws, job_calls, orch, tagged  # noqa: F401 (fixtures)

CIDR = "198.51.100.7/32"


def private_subnet(ec2, public: bool = False) -> tuple[str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    if public:
        ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    return vpc, subnet


def launch(orch, job, *extra):  # noqa: F811
    return orch("launch", "--instance", "g4dn.2xlarge", "--name", job, "--ssh-cidr", CIDR, "--data", "demo", *extra)


def group_vpc(ec2, job: str) -> str:
    group, = tagged(job)["security_groups"]
    return group["VpcId"]


def test_a_subnet_without_public_addresses_gets_the_instance_one_and_the_group_in_its_vpc(aws, orch, job_calls):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc, subnet = private_subnet(ec2)
    r = launch(orch, "sub1", "--subnet-id", subnet, "--dry-run")
    assert r.exit_code == 0, r.output
    assert re.search(rf"network\s+{subnet} \({vpc}, {REGION}a; a public address asked for\)", r.output)

    r = launch(orch, "sub1", "--subnet-id", subnet)
    assert r.exit_code == 0, r.output
    call = aws.run_calls[-1]
    assert "SubnetId" not in call and "SecurityGroupIds" not in call
    nic, = call["NetworkInterfaces"]
    assert nic["SubnetId"] == subnet and nic["AssociatePublicIpAddress"] is True and nic["DeviceIndex"] == 0
    assert call["Placement"] == {"AvailabilityZone": f"{REGION}a"}
    assert group_vpc(ec2, "sub1") == vpc
    inst, = tagged("sub1")["instances"]
    assert inst["SubnetId"] == subnet and {"Key": "orch:subnet", "Value": subnet} in inst["Tags"]


def test_a_subnet_reached_through_a_proxy_or_giving_addresses_is_used_as_it_is(aws, orch, job_calls, monkeypatch):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    _, subnet = private_subnet(ec2)
    r = launch(orch, "sub2", "--subnet-id", subnet, "--ssh-proxy-command", "false")
    assert r.exit_code == 0, r.output
    assert aws.run_calls[-1]["SubnetId"] == subnet and "NetworkInterfaces" not in aws.run_calls[-1]

    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24", AvailabilityZone=f"{REGION}b")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})
    monkeypatch.setenv("ORCH_SUBNET_ID", public)  # as subnet_id in config.toml
    r = launch(orch, "sub3")
    assert r.exit_code == 0, r.output
    assert aws.run_calls[-1]["SubnetId"] == public and group_vpc(ec2, "sub3") == vpc


def test_a_region_without_a_default_vpc_names_the_flag_and_creates_nothing(aws, orch, job_calls):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION)
    default, = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [default["VpcId"]]}])["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    ec2.delete_vpc(VpcId=default["VpcId"])

    r = launch(orch, "novpc")
    said = re.sub(r"\s+", " ", r.output)
    assert r.exit_code == 1 and f"No default VPC in {REGION}" in said and "Pass --subnet-id SUBNET" in said, said
    assert "Nothing was created" in said and aws.run_calls == [] and not any(tagged("novpc").values())

    r = launch(orch, "novpc", "--subnet-id", "subnet-0000dead")
    assert r.exit_code == 1 and "--subnet-id subnet-0000dead: no such subnet" in r.output

    _, subnet = private_subnet(ec2)
    r = launch(orch, "novpc", "--subnet-id", subnet)
    assert r.exit_code == 0, r.output
    assert tagged("novpc")["instances"]
