"""AWS through boto3: the client factory, the tags every resource carries, and errors a person can read.

cloud/ is boto3 only (never SSH); each module is a narrow set of plain functions that return typed records
(records.py), never raw dicts.

Every resource is tagged `orch:job=<job>`, `orch:created-by=orch` and `Name=orch-<job>`: the tags
are the truth, so any function here can rebuild what a job owns from the cloud alone.

Retries: botocore's "standard" mode retries throttling, 5xx and transient network errors only,
with exponential backoff. A capacity error is not retried in place: `run_instance` moves on to
the region's next availability zone. An error that refuses spot itself (a spot quota, the spot
service-linked role, a policy that does not cover the spot request) is the same in every zone:
`run_instance` goes to on-demand when allowed.

Tests replace `CLIENT_FACTORY` (one function: service, region -> boto3 client) to put a fake at
the edge where moto can't answer (Service Quotas values, capacity errors).
"""
from __future__ import annotations

import os
from typing import Any, Callable

TAG_JOB = "orch:job"
TAG_CREATED_BY = "orch:created-by"
TAG_CHECKPOINT_BUCKET = "orch:checkpoint-bucket"
TAG_RECOVER = "orch:recover"
TAG_KEEP_VOLUME = "orch:keep-volume"  # on the instance and its root volume: it outlives the instance
TAG_INSTANCE_PROFILE = "orch:iam-instance-profile"  # what a resume on another laptop launches with again
TAG_SUBNET = "orch:subnet"  # --subnet-id, likewise
TAG_PREPARES = "orch:prepares"  # on an `orch data prepare --target aws` instance: a digest of what it prepares
TAG_NODE = "orch:node"  # `--nodes N`: which of the job's instances this is, 0 to N-1 (none: 0, a one-instance job)
TAG_MANAGED = "orch:managed"  # `--managed`: on the job's group's instances (from its launch template), the group's name
TAG_SPEC = "orch:spec"  # on a managed job's group: the bucket folder of its spec and orch's package
TAG_NODES = "orch:nodes"  # `--nodes N`: how many (a resume on another laptop launches as many again)
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
# A spot launch is authorized on one more resource than on-demand: the spot request it creates. A policy
# without it refuses spot alone, with an UnauthorizedOperation that names no resource (the reason is encoded).
SPOT_REQUEST_PERMISSION = "ec2:RunInstances on arn:aws:ec2:*:*:spot-instances-request/* (tagged orch:job)"
SPOT_UNAUTHORIZED = "UnauthorizedOperation"
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


def is_boto_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("botocore")


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
            operation = getattr(exc, "operation_name", "") or "an operation"
            return (f"AWS denied {operation} ({code}: {msg}). Attach the policy in infra/iam-policy.json to "
                    "your IAM user or role; if it is attached, it may be older than this orch: update it from "
                    "infra/iam-policy.json (`orch doctor` checks what it can).")
        if code == "VcpuLimitExceeded":
            return (f"AWS refused the launch: vCPU quota exceeded ({msg}). Run `orch doctor` for "
                    "the quota and the command that raises it.")
        return f"AWS error {code}: {msg}"
    return None


def tags_for(job: str) -> list[dict[str, str]]:
    return [
        {"Key": TAG_JOB, "Value": job},
        {"Key": TAG_CREATED_BY, "Value": CREATED_BY},
        {"Key": "Name", "Value": resource_name(job)},
    ]


def tag_spec(resource_type: str, job: str) -> dict:
    return {"ResourceType": resource_type, "Tags": tags_for(job)}


def job_filter(job: str | None) -> list[dict]:
    if job is None:
        return [{"Name": f"tag:{TAG_CREATED_BY}", "Values": [CREATED_BY]}]
    return [{"Name": f"tag:{TAG_JOB}", "Values": [job]}]


def resource_name(job: str) -> str:
    return f"orch-{job}"




def caller_identity(region: str) -> str:
    return client("sts", region).get_caller_identity()["Arn"]
