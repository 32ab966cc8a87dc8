"""EC2 vCPU quota pre-flight: the most common first-day failure is a G-family quota of 0.

One Service Quotas call per check (`get_service_quota`, falling back to the default value). When
the quota can't be read (no permission, or an endpoint that doesn't serve it), the check says
"unknown" and the launch goes on: AWS will still refuse with VcpuLimitExceeded if it must.
"""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.cloud.aws import client, error_code
from orchestrator.cloud.instances import running_vcpus


@dataclass(frozen=True)
class QuotaFamily:
    """One of EC2's vCPU quotas: the instance families it counts, by name prefix."""

    prefixes: tuple[str, ...]
    on_demand_code: str
    spot_code: str  # "": no spot quota (High Memory instances can't run on spot)
    name: str


# AWS's own mapping ("Amazon EC2 service quotas" and "Spot Instance quotas" in the EC2 User Guide).
# The longest matching prefix wins: dl1 is DL (not Standard's d), inf2 is Inf (not i), trn1 Trn (not t).
FAMILIES = (
    QuotaFamily(("a", "c", "d", "h", "i", "m", "r", "t", "z"), "L-1216C47A", "L-34B43A08",
                "Standard (A, C, D, H, I, M, R, T, Z) instances"),
    QuotaFamily(("g", "gr", "vt"), "L-DB2E81BA", "L-3819A6DF", "G and VT instances"),
    QuotaFamily(("p",), "L-417A185B", "L-7212CCBC", "P instances"),
    QuotaFamily(("dl",), "L-6E869C2A", "L-85EED4F7", "DL instances"),
    QuotaFamily(("inf",), "L-1945791B", "L-B5D1601B", "Inf instances"),
    QuotaFamily(("trn",), "L-2C3B7624", "L-6B0D517C", "Trn instances"),
    QuotaFamily(("f",), "L-74FC7D96", "L-88CF9481", "F instances"),
    QuotaFamily(("x",), "L-7295265B", "L-E3A00192", "X instances"),
    QuotaFamily(("hpc",), "L-F7808C92", "", "HPC instances"),
    QuotaFamily(("u-", "u7"), "L-43DA4232", "", "High Memory instances"),
)


def family_of(instance_type: str) -> QuotaFamily | None:
    """The quota an instance type counts against, by the longest matching family prefix."""
    name = instance_type.lower()
    best: tuple[int, QuotaFamily | None] = (0, None)
    for family in FAMILIES:
        for prefix in family.prefixes:
            if name.startswith(prefix) and len(prefix) > best[0]:
                best = (len(prefix), family)
    return best[1]


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


def quota_for(instance_type: str, spot: bool) -> tuple[str, str]:
    """(quota code, quota name) for the type and market; ("", "") when none is known."""
    family = family_of(instance_type)
    code = (family.spot_code if spot else family.on_demand_code) if family else ""
    if not code:
        return "", ""
    # AWS's names: "Running On-Demand G and VT instances", "All G and VT Spot Instance Requests".
    if spot:
        return code, f"All {family.name.removesuffix(' instances')} Spot Instance Requests"
    return code, f"Running On-Demand {family.name}"


def check_vcpu_quota(region: str, instance_type: str, vcpus: int, spot: bool) -> QuotaCheck:
    code, name = quota_for(instance_type, spot)
    if not code:
        return QuotaCheck("", "", vcpus, 0, None, f"no known vCPU quota for {instance_type}"
                                                   f"{' on spot' if spot else ''}")
    limit, detail = _read_quota(region, code)
    in_use = 0
    if limit is not None:
        family = family_of(instance_type)
        in_use = running_vcpus(region, lambda other: family_of(other) == family, spot)
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
        f"{check.limit:g} vCPUs, {check.in_use_vcpus} in use, and this launch needs "
        f"{check.needed_vcpus}. Request an increase (approval takes minutes to a day):\n"
        f"  aws service-quotas request-service-quota-increase --service-code ec2 "
        f"--quota-code {check.quota_code} --desired-value {desired} --region {region}\n"
        f"or in the console: https://{region}.console.aws.amazon.com/servicequotas/home/"
        f"services/ec2/quotas/{check.quota_code}"
    )
