"""EC2 vCPU quota pre-flight: the most common first-day failure is a G-family quota of 0.

One Service Quotas call per check (`get_service_quota`, falling back to the default value). When
the quota can't be read (no permission, or an endpoint that doesn't serve it), the check says
"unknown" and the launch goes on: AWS will still refuse with VcpuLimitExceeded if it must.
"""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.cloud.aws import client, error_code
from orchestrator.cloud.instances import running_vcpus

# (on-demand quota code, spot quota code, families counted against it, quota's name)
_QUOTAS = (
    ("L-DB2E81BA", "L-3819A6DF", ("g", "vt"), "G and VT instances"),
    ("L-417A185B", "L-7212CCBC", ("p",), "P instances"),
    ("L-1216C47A", "L-34B43A08", ("a", "c", "d", "h", "i", "m", "r", "t", "z"), "Standard (A, C, D, H, I, M, R, T, Z) instances"),
)


@dataclass(frozen=True)
class QuotaCheck:
    quota_code: str
    quota_name: str
    needed_vcpus: int
    in_use_vcpus: int
    limit: float | None  # None: could not be read
    detail: str = ""

    @property
    def ok(self) -> bool | None:
        if self.limit is None:
            return None
        return self.in_use_vcpus + self.needed_vcpus <= self.limit


def quota_for(instance_type: str, spot: bool) -> tuple[str, tuple[str, ...], str]:
    family = instance_type.split(".")[0]
    for on_demand_code, spot_code, families, name in _QUOTAS:
        # Longest prefix wins in practice: "vt1" -> ("g","vt"), "p3" -> ("p",), "c5" -> standard.
        if family.startswith(families):
            kind = "Spot" if spot else "Running On-Demand"
            return (spot_code if spot else on_demand_code), families, f"{kind} {name}"
    return "", (), ""


def check_vcpu_quota(region: str, instance_type: str, vcpus: int, spot: bool) -> QuotaCheck:
    code, families, name = quota_for(instance_type, spot)
    if not code:
        return QuotaCheck("", "", vcpus, 0, None, f"no known vCPU quota for {instance_type}")
    limit, detail = _read_quota(region, code)
    in_use = 0
    if limit is not None:
        in_use = running_vcpus(region, families, spot)
    return QuotaCheck(code, name, vcpus, in_use, limit, detail)


def _read_quota(region: str, code: str) -> tuple[float | None, str]:
    sq = client("service-quotas", region)
    problems = []
    for call in ("get_service_quota", "get_aws_default_service_quota"):
        try:
            return float(getattr(sq, call)(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]), ""
        except Exception as e:  # NoSuchResource, AccessDenied, unreachable endpoint ...
            if not type(e).__module__.startswith("botocore"):
                raise
            problems.append(error_code(e) or type(e).__name__)
    return None, f"could not read quota {code} ({', '.join(problems)})"


def fix_message(check: QuotaCheck, region: str) -> str:
    """The exact, actionable message for a quota that is too low."""
    desired = max(int(check.in_use_vcpus + check.needed_vcpus), 8)
    return (
        f"vCPU quota too low: '{check.quota_name}' ({check.quota_code}) in {region} is "
        f"{check.limit:g} vCPUs, {check.in_use_vcpus} in use, and this instance needs "
        f"{check.needed_vcpus}. Request an increase (approval takes minutes to a day):\n"
        f"  aws service-quotas request-service-quota-increase --service-code ec2 "
        f"--quota-code {check.quota_code} --desired-value {desired} --region {region}\n"
        f"or in the console: https://{region}.console.aws.amazon.com/servicequotas/home/"
        f"services/ec2/quotas/{check.quota_code}"
    )
