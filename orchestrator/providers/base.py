"""What every provider returns: plain typed records, never raw cloud dicts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SSHEndpoint:
    """How to reach a job's machine over SSH. Produced by a provider, consumed by `remote.py`.

    `proxy_command` uses OpenSSH ProxyCommand syntax (%h host, %p port, %r user) plus %i, the
    instance id, e.g. `ssh -W %h:%p bastion` or `aws ssm start-session --target %i
    --document-name AWS-StartSSHSession --parameters portNumber=%p`. Tests use it to reach a
    loopback sshd.
    """

    host: str
    port: int = 22
    user: str = "ubuntu"
    key_path: Path | None = None
    proxy_command: str | None = None
    known_hosts: Path | None = None  # where the host key is pinned (under $ORCH_HOME)
    instance_id: str | None = None  # %i in proxy_command; when set, the host key is pinned under it, not the address


@dataclass(frozen=True)
class Instance:
    """One job's machine as the cloud (or the local machine) reports it."""

    job: str
    provider: str  # "ec2" | "local"
    instance_id: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    instance_type: str
    region: str | None = None
    zone: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    spot: bool = False
    launched_at: str | None = None  # ISO 8601
    state_reason: str | None = None  # the cloud's code, e.g. "Server.SpotInstanceTermination"
    tags: dict[str, str] = field(default_factory=dict)  # the orch:* tags (job settings that outlive the state file)


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    gpus: int = 0
    gpu_name: str | None = None
    memory_mib: int = 0


@dataclass(frozen=True)
class LaunchPlan:
    """What `orch launch` is about to create (also what `--dry-run` prints)."""

    job: str
    region: str
    instance_type: str
    vcpus: int
    ami: str
    ami_source: str  # "--ami" | "ssm:<name>" | "describe_images:<name>"
    spot: bool
    allow_on_demand_fallback: bool
    volume_gb: int
    volume_throughput: int
    ssh_cidr: str
    zones: tuple[str, ...]
    key_name: str
    security_group_name: str
    root_device: str = "/dev/sda1"
    iam_instance_profile: str | None = None
    user_data: str = ""
    price_per_hour: float | None = None
    price_source: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # extra instance tags, e.g. ("orch:checkpoint-bucket", "s3://...")
    keep_volume: bool = False  # the root volume outlives the instance (DeleteOnTermination off, tagged)
    gpus: int = 0              # GPUs of the instance type (the trainer runs one process per GPU)
    gpu_name: str | None = None

    @property
    def machine(self) -> str:
        """"g4dn.12xlarge (48 vCPUs, 4 x T4: one training process per GPU)", as the plan prints it."""
        gpus = f", {self.gpus} x {self.gpu_name or 'GPU'}" if self.gpus else ""
        if self.gpus > 1:
            gpus += ": one training process per GPU"
        return f"{self.instance_type} ({self.vcpus} vCPUs{gpus})"


@dataclass(frozen=True)
class Volume:
    """An EBS volume tagged for a job."""

    volume_id: str
    job: str
    state: str  # creating | available | in-use | deleting | ...
    zone: str
    size_gb: int = 0
    attached_to: str | None = None  # the instance id while attached
    kept: bool = False  # launched with --keep-volume (tag orch:keep-volume=on)
    created_at: str | None = None  # ISO 8601


@dataclass(frozen=True)
class TeardownReport:
    job: str
    terminated: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    key_pairs: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()  # volumes left by an instance (--keep-volume at launch), deleted now
    kept_volumes: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()  # anything still tagged for the job after teardown
    warnings: tuple[str, ...] = ()
    local: bool = False  # a --target local job: nothing in the cloud, the two fields below say what was done
    stopped: str | None = None  # what was running and was stopped, e.g. "the trainer process (pid 123)"
    kept_outputs: str | None = None  # the outputs folder left on this machine (a relaunch continues from it)
