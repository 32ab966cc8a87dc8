"""User settings and the resolved launch configuration.

Precedence, lowest first: built-in defaults < `$ORCH_HOME/config.toml` < `ORCH_*` environment
variables < command-line flags. Everything here is a frozen dataclass; nothing is read at import.

Example `$ORCH_HOME/config.toml`:

    region = "us-east-1"
    ssh_user = "ubuntu"
    ssh_proxy_command = "ssh -W %h:%p bastion"   # reach a private instance through a bastion
    iam_instance_profile = "orch-trainer"          # lets the instance read s3:// data
    subnet_id = "subnet-0abc1234"                  # an account without a default VPC
    autostop_minutes = 30                          # passed to the instance via user data
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

# The NVIDIA-driver Deep Learning Base AMI (Ubuntu 22.04), as AWS publishes it in SSM.
DEFAULT_AMI_SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
# The fallback when SSM can't be read: the newest available image with this name, by these owners.
DEFAULT_AMI_NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*"
JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class ConfigError(ValueError):
    """A setting is malformed; the message says which and how to fix it."""


def orch_home() -> Path:
    """The user directory: $ORCH_HOME, else the platform's user data dir. Created mode 700 on first use: it
    holds private keys and the job registry."""
    env = os.environ.get("ORCH_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("orch", appauthor=False))
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise ConfigError(f"orch's folder {home} ($ORCH_HOME) is a file, not a folder. Point "
                          "ORCH_HOME at a folder (orch creates it), or move the file aside.") from None
    except OSError as e:
        raise ConfigError(f"orch's folder {home} cannot be created ({e.strerror}). Point ORCH_HOME at a folder "
                          "you can write, e.g. export ORCH_HOME=~/.orch") from None
    return home


@dataclass(frozen=True)
class Settings:
    """Long-lived user settings (config file < env < flags)."""

    region: str = "us-east-1"
    ssh_user: str = "ubuntu"
    ssh_proxy_command: str | None = None
    ssh_cidr: str | None = None  # None: detect the caller's public address as a /32
    iam_instance_profile: str | None = None
    subnet_id: str | None = None  # None: the region's default VPC
    ami_ssm_parameter: str = DEFAULT_AMI_SSM_PARAMETER
    ami_owners: tuple[str, ...] = ("amazon",)
    ami_name_pattern: str = DEFAULT_AMI_NAME_PATTERN
    volume_gb: int = 200
    volume_throughput: int = 250  # MiB/s for gp3 (125..1000); ImageNet reads want more than 125
    allow_on_demand_fallback: bool = False  # opt-in: on-demand costs ~2-3x spot
    live_prices: bool = True  # ask the Pricing API (3 s timeout) before using the shipped table
    # Passed to the instance through user data (infra/bootstrap.sh acts on them).
    autostop_minutes: int | None = 30
    max_hours: float | None = None
    max_dollars: float | None = None
    checkpoint_bucket: str | None = None
    bucket: str | None = None  # s3://NAME: where `orch data` keeps datasets (under orch-datasets/)
    # Where jobs live on the machine (`<remote_root>/<job>/{data,outputs}`). None: /mnt/orch (the
    # instance's NVMe disk, mounted by infra/bootstrap.sh) when it is there, else ~/orch.
    remote_root: str | None = None
    bootstrap_script: str | None = None  # default: infra/bootstrap.sh as orch ships it; "none": no user data
    wait_timeout_s: int = 600
    poll_interval_s: float = 3.0
    # `--nodes N`: the address the other nodes reach node 0 at. None: its private address in the VPC. Set it when
    # they meet elsewhere (an overlay network; in orch's tests, one machine's loopback).
    rendezvous_host: str | None = None


_ENV_PREFIX = "ORCH_"
_INT_FIELDS = {"volume_gb", "volume_throughput", "autostop_minutes", "wait_timeout_s"}
_FLOAT_FIELDS = {"max_hours", "max_dollars", "poll_interval_s"}
_BOOL_FIELDS = {"allow_on_demand_fallback", "live_prices"}
_TUPLE_FIELDS = {"ami_owners"}
_OPTIONAL = {
    "ssh_proxy_command", "ssh_cidr", "iam_instance_profile", "subnet_id", "autostop_minutes", "max_hours",
    "max_dollars", "checkpoint_bucket", "bootstrap_script", "remote_root", "bucket", "rendezvous_host",
}


def _coerce(name: str, value: Any, source: str) -> Any:
    if value is None or (isinstance(value, str) and value == "" and name in _OPTIONAL):
        return None
    try:
        if name in _BOOL_FIELDS:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if name in _INT_FIELDS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if name in _FLOAT_FIELDS:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(value)
            return number
        if name in _TUPLE_FIELDS:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = [str(v) for v in value]
            else:
                raise ValueError(value)
            if not items:
                raise ValueError(value)
            return tuple(items)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} = {value!r} is not a valid value") from None


def _validate(s: Settings) -> Settings:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", s.region):
        raise ConfigError(f"region {s.region!r} is not an AWS region name (e.g. us-east-1)")
    from botocore.session import get_session  # botocore's endpoint data: offline

    known = get_session().get_available_regions("ec2")
    if known and s.region not in known:
        import difflib

        close = difflib.get_close_matches(s.region, known, n=3) or known[:3]
        raise ConfigError(f"region {s.region!r} is not an AWS region with EC2; did you mean {', '.join(close)}?")
    if not (8 <= s.volume_gb <= 16384):
        raise ConfigError(f"volume_gb = {s.volume_gb}: a gp3 root volume is 8..16384 GiB")
    if not (125 <= s.volume_throughput <= 1000):
        raise ConfigError(f"volume_throughput = {s.volume_throughput}: gp3 allows 125..1000 MiB/s")
    if s.autostop_minutes is not None and s.autostop_minutes < 0:
        raise ConfigError("autostop_minutes must be >= 0 (0 turns autostop off)")
    for name in ("max_hours", "max_dollars", "poll_interval_s", "wait_timeout_s"):
        value = getattr(s, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be > 0")
    if s.ssh_cidr is not None:
        s = replace(s, ssh_cidr=validate_cidr(s.ssh_cidr))
    if s.checkpoint_bucket is not None and not re.fullmatch(r"s3://[^/\s]+(/\S*)?", s.checkpoint_bucket):
        raise ConfigError(f"checkpoint_bucket {s.checkpoint_bucket!r} is not an s3:// URI "
                          "(e.g. --checkpoint-bucket s3://my-bucket/orch-checkpoints)")
    if s.bucket is not None:
        name = s.bucket[len("s3://"):] if s.bucket.startswith("s3://") else s.bucket
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
            raise ConfigError(f"bucket {s.bucket!r}: give a bucket's name, e.g. --bucket s3://my-bucket (datasets go "
                              "under its orch-datasets/ prefix)")
        s = replace(s, bucket=f"s3://{name}")
    if s.remote_root is not None and not re.fullmatch(r"(/|~/)[^\n\0]*", s.remote_root):
        raise ConfigError(f"remote_root {s.remote_root!r}: use an absolute path on the machine "
                          "(e.g. --remote-root /data/orch) or one under its home (~/orch)")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", s.ssh_user):
        raise ConfigError(f"ssh_user {s.ssh_user!r} is not a valid user name")
    return s


def validate_cidr(cidr: str) -> str:
    import ipaddress

    try:
        network = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError:
        raise ConfigError(
            f"--ssh-cidr {cidr!r} is not an IPv4 network such as 203.0.113.7/32"
        ) from None
    return str(network)  # "1.2.3.4" -> "1.2.3.4/32": EC2 wants the prefix


def validate_job_name(name: str) -> str:
    if not name.strip():
        raise ConfigError("the job name is empty (an unset variable in a script?): name a job, e.g. --name resnet50-run1 "
                          "or `orch teardown resnet50-run1`; `orch list` shows the jobs")
    if not JOB_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"job name {name!r} is invalid: use 1-40 lowercase letters, digits and '-', "
            "starting with a letter or digit (e.g. --name resnet50-run1)"
        )
    return name


def config_path() -> Path:
    return orch_home() / "config.toml"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}. Fix or remove the file.") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror}): it should be a TOML file of settings (see "
                          "`orch init`). Move it aside; orch then uses its defaults.") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}. Fix or remove the file.") from None
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def load_settings(**flags: Any) -> Settings:
    """Defaults < config file < ORCH_* env < flags (a flag of None means 'not given')."""
    values: dict[str, Any] = {}
    path = config_path()
    for key, value in _read_file(path).items():
        values[key] = _coerce(key, value, str(path))
    try:
        _validate(replace(Settings(), **values))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    for f in fields(Settings):
        env_name = _ENV_PREFIX + f.name.upper()
        if env_name in os.environ:
            values[f.name] = _coerce(f.name, os.environ[env_name], f"${env_name}")
    if "region" not in values:
        # The AWS CLI's own setting, when orch has none.
        aws_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if aws_region:
            values["region"] = aws_region
    for key, value in flags.items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    return _validate(replace(Settings(), **values))
