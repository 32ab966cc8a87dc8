"""`orch data prepare|list|rm` and `--data dataset:NAME`: datasets orch prepares once and keeps.

Today on this machine (`--target local`): `trainer prepare KIND` reads the files as downloaded into
a work folder (resumable: run the same command again after a cut), `trainer pack` turns the result
into checked shards in the store (dataset_store.py), and the work folder goes. A job on
`dataset:NAME` reads a copy restored from the shards on first use (`trainer unpack`, checked
against the manifest). A job's teardown never touches a dataset; `orch data rm` does.

The trainer runs as a process of this machine's Python (orch never imports it); the cloud half (an
instance that prepares, a bucket that keeps, Kaggle downloads) is issue 20's next step.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from orchestrator import dataset_store as store
from orchestrator.config import ConfigError
from orchestrator.errors import FlowError
from orchestrator.lifecycle.progress import Say, quiet
from orchestrator.records import DatasetInfo

KINDS = ("imagenet", "tiny-imagenet", "cifar100", "folder")
PREFIX = "dataset:"
S3_DOLLARS_PER_GB_MONTH = 0.023  # S3 Standard, first 50 TB, us-east-1 (aws.amazon.com/s3/pricing)


@dataclass(frozen=True)
class PrepareRequest:
    name: str
    kind: str
    source: str
    resize_short: int | None = None
    subset_percent: float | None = None
    target: str = "local"
    replace: bool = False


def _trainer(args: list[str], what: str, fix: str) -> None:
    """`python -m trainer ARGS` here, its progress on this terminal; a failure says what is kept and how to go on."""
    if importlib.util.find_spec("trainer") is None:
        raise ConfigError("the trainer is not installed with this orch (it needs torch): `pip install -e .[trainer]` "
                          "in a checkout, or `pip install 'orch-trainer[trainer]'`")
    try:
        code = subprocess.run([sys.executable, "-m", "trainer", *args], stdin=subprocess.DEVNULL).returncode
    except KeyboardInterrupt:
        raise FlowError(f"{what} interrupted. {fix}") from None
    if code != 0:
        raise FlowError(f"{what} failed (exit {code}; its message is above). {fix}")


def check(req: PrepareRequest) -> Path:
    """Refuse what can't work before anything is read or written; the source folder."""
    store.check_name(req.name)
    if req.kind not in KINDS:
        raise ConfigError(f"--kind {req.kind!r}: use one of {', '.join(KINDS)}")
    if req.target != "local":
        raise ConfigError("orch data prepare --target aws is not built yet (issue 20): prepare here with --target "
                          "local, or on an instance by hand (`trainer prepare`, `trainer pack`)")
    if req.source.startswith(("s3://", "kaggle:")):
        raise ConfigError(f"--source {req.source}: s3:// and kaggle: sources are prepared on an instance, which is "
                          "not built yet (issue 20); download the files and pass their folder")
    source = Path(req.source).expanduser()
    if not source.exists():
        raise ConfigError(f"--source {req.source}: no such file or folder here")
    if store.get(req.name) is not None and not req.replace:
        raise ConfigError(f"dataset {req.name!r} exists (`orch data list`); add --replace to prepare it again, or "
                          "choose another name")
    return source


def prepare(req: PrepareRequest, say: Say = quiet) -> DatasetInfo:
    source = check(req)
    where = store.folder(req.name)
    work = where / "prepared"  # `trainer prepare` resumes into it after a cut
    extra = []
    if req.resize_short:
        extra += ["--resize-short", str(req.resize_short)]
    if req.subset_percent:
        extra += ["--subset-percent", f"{req.subset_percent:g}"]
    again = f"The prepared part is kept in {work}: the same command carries on from it."
    say(f"preparing {req.kind} from {source} into {work}")
    _trainer(["prepare", req.kind, "--source", str(source), "--dest", str(work), *extra], "trainer prepare", again)
    staging = where / "shards.new"
    say(f"packing it into shards in {where}")
    _trainer(["pack", "--data", str(work), "--out", str(staging)], "trainer pack", again)
    store.remove_parts(req.name)  # --replace: the old one goes only now that the new one is whole
    staging.rename(store.shards_dir(req.name))
    summary = store.summary_of(store.shards_dir(req.name))
    options = {k: v for k, v in (("resize_short", req.resize_short), ("subset_percent", req.subset_percent)) if v}
    info = DatasetInfo(name=req.name, kind=req.kind, source=req.source, location=str(where),
                       created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), options=options,
                       **summary)
    store.save(info)
    shutil.rmtree(work, ignore_errors=True)
    return info


def with_cost(info: DatasetInfo) -> DatasetInfo:
    if info.location.startswith("s3://"):
        return replace(info, dollars_per_month=round(info.bytes / 1e9 * S3_DOLLARS_PER_GB_MONTH, 2))
    return info


def list_datasets() -> list[DatasetInfo]:
    return [with_cost(d) for d in store.all_datasets()]


def remove(name: str) -> bool:
    store.check_name(name)
    return store.remove(name)


def name_of(data: str) -> str | None:
    """NAME for `--data dataset:NAME`, else None."""
    return data[len(PREFIX):] if data.startswith(PREFIX) else None


def restore_here(name: str, say: Say = quiet) -> str:
    """The folder a local job reads `dataset:NAME` from, restored from its shards (checked) when needed."""
    info = store.get(store.check_name(name))
    if info is None:
        known = ", ".join(d.name for d in store.all_datasets()) or "none yet"
        raise ConfigError(f"--data dataset:{name}: no such dataset here (kept: {known}). Make it with "
                          f"`orch data prepare {name} --kind KIND --source DIR --target local`.")
    dest = store.data_dir(name)
    say(f"  dataset {name}: restoring {info.shards} shard(s) into {dest} (checked against the manifest; "
        "a copy restored before is reused)")
    _trainer(["unpack", "--shards", str(store.shards_dir(name)), "--dest", str(dest)], "trainer unpack",
             "The same launch carries on with the shards not yet restored.")
    return str(dest)
