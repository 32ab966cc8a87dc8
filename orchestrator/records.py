"""The typed records that cross a boundary in orch: between the cloud, the machines, the job and the CLI.

Plain frozen dataclasses, no behaviour beyond a derived property: raw boto3 dicts, paramiko objects
and Docker SDK objects never leave the module that talks to them (cloud/, remote/, machines/).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.secret_records import KaggleToken, TrainerEnv  # noqa: F401 (re-exported: what job records hold)

def whole(text: str, default: int) -> int:
    """A tag's whole number (ASCII digits only: "²".isdigit() is True), else `default`."""
    return int(text) if text.isascii() and text.isdecimal() else default


# -- the cloud -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSHEndpoint:
    """How to reach a job's machine over SSH. Produced by a machine, consumed by `remote/ssh.py`.

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
    managed: bool = False  # a managed job's instance: its group may replace it (lifecycle/machines.py)


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

    @property
    def node(self) -> int:
        """Which of a `--nodes N` job's instances this is (tag orch:node); 0 for a one-instance job."""
        return whole(self.tags.get("orch:node", "0"), -1)  # -1: a tag orch never writes (no node of the run)


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    gpus: int = 0
    gpu_name: str | None = None
    memory_mib: int = 0
    instance_store_gb: int = 0  # its NVMe instance store, where the AMI mounts it (a job's data goes there)
    cluster_placement: bool | None = None  # can join a cluster placement group; None: EC2 does not say


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
    vpc_id: str | None = None  # None: the default VPC
    subnets: tuple[tuple[str, str], ...] = ()  # (zone, subnet id) the launch may use
    public_ip: bool = False    # ask for a public address (a --subnet-id that gives none, no proxy command)
    network: str = "default VPC"  # as the plan prints it
    nodes: int = 1  # `--nodes N`: N instances of the type, one training run over all of them
    placement_group: str | None = None  # their cluster placement group; None: none (one node, or a type without)
    placement_note: str = ""  # why there is none, as the plan prints it
    quota: str = ""  # the vCPU quota the instances count against: "Running On-Demand G and VT instances (L-DB2E81BA)"
    managed: tuple[str, ...] = ()  # --managed: its group's instance types (price, caps: the dearest of them)

    @property
    def machine(self) -> str:
        """"g4dn.12xlarge (48 vCPUs, 4 x T4: one training process per GPU)", as the plan prints it."""
        gpus = f", {self.gpus} x {self.gpu_name or 'GPU'}" if self.gpus else ""
        if self.gpus > 1:
            gpus += ": one training process per GPU"
        return f"{self.instance_type} ({self.vcpus} vCPUs{gpus})"

    @property
    def total_price_per_hour(self) -> float | None:
        """Every node's hourly price together."""
        return None if self.price_per_hour is None else self.price_per_hour * self.nodes


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
    placement_groups: tuple[str, ...] = ()  # a `--nodes N` job's cluster placement group
    auto_scaling_groups: tuple[str, ...] = ()  # a managed job's group (cloud/groups.py)
    launch_templates: tuple[str, ...] = ()  # and its launch template
    bucket_objects: tuple[str, ...] = ()  # and its spec and orch's package in the checkpoint bucket (not checkpoints)
    volumes: tuple[str, ...] = ()  # volumes left by an instance (--keep-volume at launch), deleted now
    kept_volumes: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()  # anything still tagged for the job after teardown
    warnings: tuple[str, ...] = ()
    local: bool = False  # a --target local job: nothing in the cloud, the two fields below say what was done
    stopped: str | None = None  # what was running and was stopped, e.g. "the trainer process (pid 123)"
    kept_outputs: str | None = None  # the outputs folder left on this machine (a relaunch continues from it)


# -- the job on a machine ------------------------------------------------------------------------


@dataclass(frozen=True)
class Restore:
    """Where `orch launch --resume` brings the newest checkpoint back from (job/restore.py)."""

    bucket: str | None = None  # s3://bucket/prefix, as given to --checkpoint-bucket
    local_dir: str | None = None  # a folder holding checkpoints/last.pt (from `orch fetch-weights`)
    volume_id: str | None = None  # a kept root volume (vol-...), attached to the machine as a second disk
    volume_device: str | None = None  # its block device there; None: found by the volume id (Nitro NVMe serial)


ENV_FILE_NAME = "env.json"  # beside the job's outputs on the machine, mode 600: the trainer's --env values
ENV_IN_CONTAINER = "/run/orch/env.json"
ENV_VARIABLE = "TRAINER_ENV_FILE"  # names the file for the trainer (trainer/envfile.py)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset orch keeps (`orch data`): what it holds and where (dataset_store.py)."""

    name: str
    kind: str  # imagenet, tiny-imagenet, cifar100, folder
    source: str  # what it was prepared from, as given
    classes: int
    train_images: int
    val_images: int
    bytes: int  # of its shards
    shards: int
    location: str  # a folder here, or an s3:// URI
    created_at: str
    options: dict = field(default_factory=dict)  # resize_short, subset_percent, ... as asked
    dollars_per_month: float | None = None  # storage; None for a folder here
    version: str = ""  # in a bucket: its shards are under LOCATION/shards-VERSION/ (a --replace writes a new one)


@dataclass(frozen=True)
class DatasetSource:
    """A kept dataset a machine restores (`--data dataset:NAME`): where its shards are, and which."""

    name: str
    uri: str  # s3://BUCKET/orch-datasets/NAME/shards-VERSION: manifest.json and the shards
    shards: tuple[tuple[str, int], ...]  # (shard-NNNNN.tar, bytes), as its manifest names them (checked)
    manifest_key: str  # dataset_store.manifest_key: which restore on a machine is of these shards

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.shards)


@dataclass(frozen=True)
class ImageRegistry:
    """Where trainer images are kept between machines: the account's ECR repository (cloud/registry.py)."""

    repository: str  # "<account>.dkr.ecr.<region>.amazonaws.com/orch-trainer"
    region: str

    @property
    def host(self) -> str:
        return self.repository.split("/", 1)[0]


@dataclass(frozen=True)
class ImageReady:
    """The trainer image a runner has ready, and how it got there."""

    image: str  # "" for a runner without images (a local process)
    content_hash: str = ""  # "" for an image given with --image
    how: str = "given"  # "given" (--image or none needed), "found" (already on the engine), "pulled", "built"


@dataclass(frozen=True)
class JobSpec:
    job: str
    data: str  # a local folder, "demo", or an s3:// URI (copied on the instance)
    image: str | None = None  # a prebuilt trainer image; None builds from the project's Dockerfile
    trainer_args: tuple[str, ...] = ()  # passed through to `trainer train` (after `--`)
    gpus: bool = True
    base_image: str | None = None  # None: $ORCH_BASE_IMAGE, else the Dockerfile's pinned NGC image
    max_restarts: int = 5  # restarts after a crash, each resuming from last.pt
    remote_root: str | None = None  # None: /mnt/orch when the machine has it, else ~/orch
    restore: Restore | None = None  # bring a checkpoint back before starting (--resume)
    outputs_root: str | None = None  # None: `<job root>/outputs`; else `<outputs_root>/<job>/outputs` (--keep-volume)
    autostop_minutes: int | None = None  # what the instance was told (--autostop-minutes); kept as a container label
    registry: ImageRegistry | None = None  # the built image is pushed there, and pulled from there when built before
    env: TrainerEnv = TrainerEnv()  # --env/--env-file: to the machine in a mode-600 file, nowhere else
    dataset: DatasetSource | None = None  # --data dataset:NAME on an instance: restored there from the bucket
    # A trainer command other than `train` (its arguments after `trainer`, in the container's /data and /outputs):
    # `trainer make-dataset ...` for `orch data prepare --target aws`. None: train with trainer_args.
    command: tuple[str, ...] | None = None
    kaggle: KaggleToken | None = None  # --data kaggle:COMPETITION: downloaded on the machine with this token


@dataclass(frozen=True)
class RunSpec:
    """What a runner starts: the trainer on the job's folders, with the labels that describe it."""

    job: str
    image: str  # "" for a runner without images (a local process)
    trainer_args: tuple[str, ...]  # the `trainer train` arguments after the folders (`job.spec.trainer_command`)
    data_dir: str  # on the machine; a container sees it read-only at /data
    outputs_dir: str  # on the machine; a container sees it at /outputs
    gpus: bool = True  # all GPUs; an engine that cannot give them refuses (`NoGPUs`) rather than run on the CPU
    user: str | None = None  # "uid:gid"; None: the image's non-root user
    max_restarts: int = 5  # restarts after a crash; each resumes from last.pt (`--resume auto`)
    image_hash: str = ""
    created_by: str = "orch"
    labels: dict[str, str] = field(default_factory=dict)  # extra labels (the launch's data source, arguments, ...)
    env_file: str = ""  # on the machine: the mode-600 file of --env values the trainer reads ("" for none)
    command: tuple[str, ...] | None = None  # JobSpec.command: another trainer command than `train`


@dataclass(frozen=True)
class TrainerState:
    """The trainer as its runner sees it: a container's state and labels, or a supervised process's."""

    job: str
    state: str  # created | running | restarting | paused | exited | dead | missing
    exit_code: int | None = None
    restarts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    image: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()  # what the image's entrypoint (or the process) was given

    @property
    def ended(self) -> bool:
        """Exited for good: no restart is coming."""
        return self.state in ("exited", "dead", "missing")


@dataclass(frozen=True)
class LogLine:
    ts_ns: int  # the engine's timestamp, nanoseconds since the epoch
    text: str


@dataclass(frozen=True)
class ContainerStatus:
    """The job's trainer as `orch status` shows it (a container, or a local trainer process)."""

    job: str
    state: str  # created | running | restarting | exited | dead | missing
    exit_code: int | None = None
    restarts: int = 0
    last_metrics: dict = field(default_factory=dict)  # the latest line of metrics.jsonl
    image: str | None = None
    outputs: str | None = None  # the outputs folder on the job's machine
    runner: str = "docker"  # docker | process (the local target without an engine)
    # From a start that found the job already running, and so changed nothing: what it asked for that the
    # running job does not use (e.g. "--data /new (it trains on /old)"). Empty: nothing differs, or not a start.
    not_applied: tuple[str, ...] = ()
    # From a start that continues the job: the outputs folder whose checkpoint the trainer resumes (None: fresh).
    continues_from: str | None = None
    # From a start that found the job already running (its container or process): nothing of the start was used.
    already_running: bool = False
    # From a start under the instance's hard cap: the --max-hours the trainer was given, and why (one line).
    budget: str | None = None


@dataclass(frozen=True)
class HardCap:
    """The instance's hard cap, as its watcher (infra/bootstrap.sh) counts it: it stops the job there."""

    seconds: int  # the cap (--max-hours, or --max-dollars at the hourly price)
    elapsed_s: int  # since the watcher first started, by the machine's own clock


@dataclass(frozen=True)
class JobEnded:
    """How a job's trainer ended (see `job.ended.after_the_job`)."""

    job: str
    exit_code: int
    finished_at: str | None = None  # RFC 3339, the engine's clock
    outputs: str | None = None  # the outputs folder on the job's machine
    autostop_minutes: int | None = None  # what the instance was told (a container label); None: not known


@dataclass(frozen=True)
class FetchReport:
    dest: Path
    files: tuple[Path, ...]
    verified: tuple[Path, ...]
    bytes_downloaded: int
    source: str = ""  # "": the job's machine; else the checkpoint bucket it came from (no instance was up)


# -- a launch and a view ------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    """Everything one `orch launch` needs, resolved."""

    job: str
    instance_type: str
    settings: Settings
    spot: bool = False
    zone: str | None = None  # None: any zone of the region offering the type, in order
    ami: str | None = None  # None: resolve the Deep Learning AMI
    dry_run: bool = False
    target: str = "aws"  # aws | local
    job_spec: JobSpec | None = None  # None: provision only
    # --resume: bring the newest checkpoint back onto a new machine before the trainer starts.
    resume: bool = False
    resume_from: str | None = None  # a local copy (`orch fetch-weights --which all --dest DIR`)
    # --recover: stay attached, and on a spot reclaim launch again with --resume (from this terminal).
    recover: bool = False
    max_recoveries: int = 3
    # --keep-volume: the root EBS volume outlives the instance, and the job's outputs are written on it.
    keep_volume: bool = False
    # `orch data prepare --target aws`: what the instance prepares (lifecycle/data_instance.py), tagged orch:prepares.
    prepares: str | None = None
    nodes: int = 1  # --nodes N: one run over N instances (lifecycle/nodes.py)
    managed: tuple[str, ...] = ()  # --managed: the instance types its Auto Scaling group may start (lifecycle/managed.py)

    @property
    def region(self) -> str:
        return self.settings.region


@dataclass(frozen=True)
class JobView:
    """One job as `orch status` and `orch list` show it."""

    job: str
    target: str  # aws | local
    state: str  # the cloud's word (running, terminated, ...), "gone"; a local job's trainer state, or "local"
    region: str | None = None
    instance: Instance | None = None
    container: ContainerStatus | None = None  # when asked for and reachable
    note: str = ""
    unreachable: str | None = None  # the trainer was asked for and could not be reached: why
    # A `--nodes N` job: every node's instance, node 0 first (`instance` is node 0's); () for a one-instance job.
    nodes: tuple[Instance, ...] = ()
    node_containers: tuple[str, ...] = ()  # with the container asked for: each node's trainer in a few words
