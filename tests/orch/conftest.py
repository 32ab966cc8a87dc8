"""Fixtures for the cloud half: a moto server standing in for AWS, and the edges moto can't be.

- `aws`: a moto server (one per session, reset per test) that boto3 reaches via AWS_ENDPOINT_URL,
  with a registered "Deep Learning AMI" published under a test SSM parameter (moto reserves the
  real /aws/service/... names) and G-family quota answers injected at the client factory.
- `job_calls`: moto's instances have no sshd, so the machine the flow chooses is a fake `Machine`
  (tests/fixtures/fake_machine.py) that records each start and stop; the cloud half, the machine
  choice and job/start.py's flow are real.
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from orchestrator.cloud import aws as cloud_aws
from tests.fixtures.fake_machine import Calls, stand_in

DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250101"
SSM_PARAM = "/orch-test/dlami/latest/ami-id"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Edge:
    """What tests inject at the boto client edge."""

    quotas: dict = field(default_factory=dict)  # quota code -> value; missing: NoSuchResource
    capacity_fail_zones: set = field(default_factory=set)  # RunInstances here -> InsufficientInstanceCapacity
    no_spot_capacity: bool = False  # every spot RunInstances -> InsufficientInstanceCapacity
    spot_error: str | None = None  # every spot RunInstances -> this error code (a spot quota, the spot role)
    fail_keep_volume: bool = False  # ModifyInstanceAttribute -> UnauthorizedOperation
    detaching: dict = field(default_factory=dict)  # volume id -> DescribeVolumes answers that still show it detaching
    throttle_run_instances: int = 0  # answer this many RunInstances sends with 503 RequestLimitExceeded
    sends: int = 0  # RunInstances requests that reached the wire (retries included)
    spot_reclaimed: bool = False  # terminated instances report AWS's spot-reclaim reason
    fail_after_run_instances: bool = False  # simulate the launch being killed right after the call
    run_calls: list = field(default_factory=list)


class _FakeServiceQuotas:
    """Service Quotas as AWS answers it; moto only serves VPC quotas."""

    def __init__(self, edge: Edge):
        self.edge = edge

    def _answer(self, ServiceCode, QuotaCode):
        if QuotaCode not in self.edge.quotas:
            raise ClientError({"Error": {"Code": "NoSuchResourceException", "Message": "no such quota"}},
                              "GetServiceQuota")
        return {"Quota": {"ServiceCode": ServiceCode, "QuotaCode": QuotaCode, "Value": self.edge.quotas[QuotaCode]}}

    get_service_quota = _answer
    get_aws_default_service_quota = _answer


class Killed(BaseException):
    """Stands for the process dying (SIGKILL, laptop closed): not an error orch can handle."""


def _response(url, status, body):
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **_):
            yield body

    return AWSResponse(url, status, {"Content-Type": "text/xml"}, Raw())


@pytest.fixture
def aws(moto_url, monkeypatch):
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(req).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("ORCH_AMI_SSM_PARAMETER", SSM_PARAM)
    monkeypatch.setenv("ORCH_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("ORCH_LIVE_PRICES", "0")  # moto has no Pricing API; the table answers
    monkeypatch.setenv("ORCH_BOOTSTRAP_SCRIPT", "/nonexistent/bootstrap.sh")
    edge = Edge(quotas={"L-DB2E81BA": 64.0, "L-3819A6DF": 64.0})
    default_factory = cloud_aws._default_client_factory

    def factory(service, region):
        if service == "service-quotas":
            return _FakeServiceQuotas(edge)
        client = default_factory(service, region)
        if service == "ec2":
            def before(params, **_):
                edge.run_calls.append(params)
                zone = params.get("Placement", {}).get("AvailabilityZone")
                if zone in edge.capacity_fail_zones or (edge.no_spot_capacity and "InstanceMarketOptions" in params):
                    raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity",
                                                 "Message": f"no capacity in {zone}"}}, "RunInstances")
                if edge.spot_error and "InstanceMarketOptions" in params:
                    raise ClientError({"Error": {"Code": edge.spot_error, "Message": "spot refused"}}, "RunInstances")

            def modify_attribute(params, **_):
                if edge.fail_keep_volume:
                    raise ClientError({"Error": {"Code": "UnauthorizedOperation",
                                                 "Message": "not authorized to perform ec2:ModifyInstanceAttribute"}},
                                      "ModifyInstanceAttribute")

            def detaching(parsed, **_):
                # moto detaches a volume the moment its instance terminates; AWS takes a while.
                for volume in parsed.get("Volumes", []):
                    left = edge.detaching.get(volume["VolumeId"], 0)
                    if left > 0 and volume["State"] == "available":
                        edge.detaching[volume["VolumeId"]] = left - 1
                        volume["State"] = "in-use"
                        volume["Attachments"] = [{"VolumeId": volume["VolumeId"], "InstanceId": "i-0gone",
                                                  "Device": "/dev/sda1", "State": "detaching"}]

            def after(**_):
                if edge.fail_after_run_instances:
                    raise Killed("killed right after run_instances")

            def reclaimed(parsed, **_):
                # moto can't reclaim a spot instance; AWS reports it like this.
                for reservation in parsed.get("Reservations", []) if edge.spot_reclaimed else []:
                    for inst in reservation["Instances"]:
                        if inst["State"]["Name"] == "terminated":
                            inst["StateReason"] = {"Code": "Server.SpotInstanceTermination",
                                                   "Message": "Server.SpotInstanceTermination: Spot instance termination"}

            def throttle(request, **_):
                # Below botocore's retry handler, like a real throttled response from EC2.
                edge.sends += 1
                if edge.throttle_run_instances > 0:
                    edge.throttle_run_instances -= 1
                    return _response(request.url, 503, b"<Response><Errors><Error><Code>RequestLimitExceeded"
                                     b"</Code><Message>Request limit exceeded.</Message></Error></Errors>"
                                     b"<RequestID>orch-test</RequestID></Response>")
                return None

            client.meta.events.register("provide-client-params.ec2.RunInstances", before)
            client.meta.events.register("before-send.ec2.RunInstances", throttle)
            client.meta.events.register("after-call.ec2.DescribeInstances", reclaimed)
            client.meta.events.register("after-call.ec2.RunInstances", after)
            client.meta.events.register("provide-client-params.ec2.ModifyInstanceAttribute", modify_attribute)
            client.meta.events.register("after-call.ec2.DescribeVolumes", detaching)
        return client

    monkeypatch.setattr(cloud_aws, "CLIENT_FACTORY", factory)
    ec2 = boto3.client("ec2", region_name=REGION)
    image_id = ec2.register_image(Name=DLAMI_NAME, RootDeviceName="/dev/sda1",
                                  BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}])["ImageId"]
    boto3.client("ssm", region_name=REGION).put_parameter(Name=SSM_PARAM, Value=image_id, Type="String")
    edge.image_id = image_id
    return edge


@pytest.fixture
def job_calls(monkeypatch):
    """The machines the flow chooses are fakes (tests/fixtures/fake_machine.py): what each start and stop was asked."""
    return stand_in(monkeypatch, Calls())


@pytest.fixture
def orch():
    """Run `orch ARGS...` in-process; returns the click Result."""
    from orchestrator.cli import app

    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=True)

    return run


def tagged(job: str) -> dict:
    """What moto holds for a job, by tag (terminated instances excluded)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    f = [{"Name": "tag:orch:job", "Values": [job]}]
    instances = [i for r in ec2.describe_instances(Filters=f)["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] != "terminated"]
    return {
        "instances": instances,
        "security_groups": ec2.describe_security_groups(Filters=f)["SecurityGroups"],
        "key_pairs": ec2.describe_key_pairs(Filters=f)["KeyPairs"],
        "volumes": ec2.describe_volumes(Filters=f)["Volumes"],
    }


def read_state(home) -> dict:
    path = home / "orch" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}
