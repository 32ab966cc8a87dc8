"""What a region offers: the Deep Learning AMI, instance types (vCPUs, GPUs), the zones that have a type."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable

from orchestrator.cloud.aws import ProviderError, UnknownInstanceType, client, error_code, is_boto_error
from orchestrator.cloud import placement
from orchestrator.records import InstanceTypeInfo

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
        if error_code(e) is None and not is_boto_error(e):
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
        instance_store_gb=int(t.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0)),
        cluster_placement=(placement.STRATEGY in t["PlacementGroupInfo"]["SupportedStrategies"]
                           if "SupportedStrategies" in t.get("PlacementGroupInfo", {}) else None),
    )


# Types the Deep Learning Base OSS Nvidia Driver AMI cannot drive, with their GPUs: its open NVIDIA kernel
# modules need Turing or later (the AMI's release notes list G4dn, G5, G6, G6e, Gr6, P4, P5 and later), and
# an x86 image runs no Arm or AMD GPU instance. Such a launch would boot and bill before the container
# fails. Every size, named (the families are frozen: AWS adds none), so a typo is still "no such type".
_OLD = {"p2": "NVIDIA K80 (Kepler)", "g3": "NVIDIA M60 (Maxwell)", "p3": "NVIDIA V100 (Volta)",
        "g4ad": "AMD Radeon Pro V520", "g5g": "NVIDIA T4G on Arm (Graviton2)"}
DLAMI_UNSUPPORTED = {  # type -> (GPU, how many)
    **{f"p2.{s}": (_OLD["p2"], n) for s, n in (("xlarge", 1), ("8xlarge", 8), ("16xlarge", 16))},
    "g3s.xlarge": (_OLD["g3"], 1),
    **{f"g3.{s}": (_OLD["g3"], n) for s, n in (("4xlarge", 1), ("8xlarge", 2), ("16xlarge", 4))},
    **{f"p3.{s}": (_OLD["p3"], n) for s, n in (("2xlarge", 1), ("8xlarge", 4), ("16xlarge", 8))},
    "p3dn.24xlarge": (_OLD["p3"], 8),
    **{f"g4ad.{s}": (_OLD["g4ad"], n) for s, n in (("xlarge", 1), ("2xlarge", 1), ("4xlarge", 1), ("8xlarge", 2),
                                                    ("16xlarge", 4))},
    **{f"g5g.{s}": (_OLD["g5g"], n) for s, n in (("xlarge", 1), ("2xlarge", 1), ("4xlarge", 1), ("8xlarge", 1),
                                                   ("16xlarge", 2), ("metal", 2))},
}
# What to take instead, smallest GPU count first, then cheapest: (type, GPUs).
DLAMI_ALTERNATIVES = (
    ("g4dn.xlarge", 1), ("g6.xlarge", 1), ("g5.xlarge", 1),
    ("g4dn.12xlarge", 4), ("g6.12xlarge", 4), ("g5.12xlarge", 4),
    ("g6.48xlarge", 8), ("g5.48xlarge", 8), ("p4d.24xlarge", 8),
)


def dlami_unsupported(instance_type: str) -> tuple[str, int] | None:
    """(GPU, count) of a type the Deep Learning AMI cannot drive, else None."""
    return DLAMI_UNSUPPORTED.get(instance_type)


def dlami_alternatives(gpus: int) -> list[str]:
    """Supported types with at least `gpus` GPUs, from the smallest such count."""
    fits = [(name, n) for name, n in DLAMI_ALTERNATIVES if n >= max(gpus, 1)]
    least = min((n for _, n in fits), default=None)
    return [name for name, n in fits if n == least] or [name for name, n in DLAMI_ALTERNATIVES if n == 8]


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


def offered_zones(region: str, instance_type: str, with_subnet: Iterable[str]) -> tuple[str, ...]:
    """Of the zones where the launch has a subnet, those that offer the type, in name order."""
    ec2 = client("ec2", region)
    offered = {
        o["Location"]
        for o in ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )["InstanceTypeOfferings"]
    }
    return tuple(sorted(z for z in with_subnet if z in offered))
