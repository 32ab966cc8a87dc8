"""`orch data prepare|list|rm` and `--data dataset:NAME`: datasets orch prepares once and keeps.

`trainer prepare KIND` reads the files as downloaded into a work folder (resumable: run the same
command again after a cut), and `trainer pack` turns the result into checked shards. They are kept
on this machine (dataset_store.py), or with a bucket in it, under `orch-datasets/NAME/shards-VERSION/`
(cloud/datasets.py; a --replace uploads a new VERSION, and the old one goes once the new is whole).
A job on `dataset:NAME` reads a copy restored from the shards (`trainer unpack`, checked against the
manifest): a local job from this machine's store or the bucket, an instance from the bucket with its
own role (machines/data.py). A job's teardown never touches a dataset; `orch data rm` does.

A description read from a bucket is checked field by field, and where a dataset is comes from where it
was found, never from what it says. Here the trainer runs as a process of this machine's Python (orch
never imports it); `--target aws` prepares on an instance (data_instance.py) from a folder here or an
s3:// prefix or kaggle:COMPETITION. `orch launch --prepare KIND` runs data_instance.ensure_prepared first.
"""
from __future__ import annotations

import importlib.util
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from orchestrator import dataset_store as store
from orchestrator.cloud import datasets as cloud_datasets
from orchestrator.config import ConfigError
from orchestrator.errors import FlowError
from orchestrator.lifecycle.progress import Say, quiet
from orchestrator.records import DatasetInfo, DatasetSource

KINDS = store.KINDS
PREFIX = "dataset:"
S3_DOLLARS_PER_GB_MONTH = 0.023  # S3 Standard, first 50 TB, us-east-1 (aws.amazon.com/s3/pricing)


@dataclass(frozen=True)
class PrepareRequest:
    name: str
    kind: str
    source: str
    resize_short: int | None = None
    resize_short_train: int | None = None  # train/ alone at this short side (val/ keeps resize_short)
    subset_percent: float | None = None
    target: str = "local"
    replace: bool = False
    bucket: str | None = None  # s3://NAME: keep it there (under orch-datasets/), not on this machine
    region: str = "us-east-1"
    instance: str | None = None  # --target aws: the instance type that prepares (data_instance.DEFAULT_INSTANCE)


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


def check(req: PrepareRequest) -> Path | None:
    """Refuse what can't work before anything is read or written; the source folder here (None: prepared on an
    instance from it, or from an s3:// or kaggle: source)."""
    store.check_name(req.name)
    if req.kind not in KINDS:
        raise ConfigError(f"--kind {req.kind!r}: use one of {', '.join(KINDS)}")
    if req.kind == "cifar100" and (req.resize_short or req.resize_short_train):
        raise ConfigError("--resize-short and --resize-short-train re-encode JPEGs; CIFAR-100's 32 px images are "
                          "written as they are: leave them out for --kind cifar100")
    if req.target not in ("local", "aws"):
        raise ConfigError(f"--target {req.target!r}: use local (prepare here) or aws (on an instance)")
    if req.target == "aws" and not req.bucket:
        raise ConfigError("--target aws keeps the dataset in your bucket: add --bucket s3://NAME (or bucket in "
                          "config.toml)")
    if req.target == "local" and req.source.startswith(("s3://", "kaggle:")):
        raise ConfigError(f"--source {req.source}: s3:// and kaggle: sources are prepared on an instance: add "
                          "--target aws (and --bucket), or download the files and pass their folder")
    source = None
    if req.target == "aws":
        data_of(req.source)  # a source an instance can't prepare from is refused here
    elif not req.source.startswith(("s3://", "kaggle:")):
        source = Path(req.source).expanduser()
        if not source.exists():
            raise ConfigError(f"--source {req.source}: no such file or folder here")
    if find(req.name, req.bucket, req.region) is not None and not req.replace:
        raise ConfigError(f"dataset {req.name!r} exists (`orch data list`); add --replace to prepare it again, or "
                          "choose another name")
    return source


def data_of(source: str) -> str:
    """What a preparing instance's --data is: an s3:// prefix as given (copied on the instance), kaggle:COMPETITION
    (downloaded there), else a folder here."""
    if source.startswith("kaggle:"):
        from orchestrator.lifecycle.kaggle import competition_of

        return f"kaggle:{competition_of(source)}"  # downloaded on the instance with your token
    if source.startswith("s3://"):
        return source.rstrip("/")
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--source {source}: not a folder here (an instance prepares from a folder, which is sent "
                          "to it once, or from an s3:// prefix)")
    return str(folder.resolve())


def dataset_name_for(source: str, resize_short: int | None = None, subset_percent: float | None = None,
                     resize_short_train: int | None = None) -> str:
    """A dataset's name from its source, as `--prepare` names it without --dataset-name: the folder's, the
    prefix's or the competition's last part, with its options ("imagenet-256", "imagenet-256-t192" for train/
    at 192, "cifar-100-p10")."""
    base = source.rstrip("/").split(":", 1)[1] if source.startswith("kaggle:") else source.rstrip("/")
    base = re.sub(r"[^a-z0-9-]+", "-", base.rsplit("/", 1)[-1].lower()).strip("-") or "dataset"
    suffix = ((f"-{resize_short}" if resize_short else "") + (f"-t{resize_short_train}" if resize_short_train else "")
              + (f"-p{subset_percent:g}".replace(".", "-") if subset_percent else ""))
    return store.check_name(base[:40 - len(suffix)].strip("-") + suffix)


def options_of(req: PrepareRequest) -> dict:
    """The preparing options asked, as a dataset's description records them."""
    asked = (("resize_short", req.resize_short), ("resize_short_train", req.resize_short_train),
             ("subset_percent", req.subset_percent))
    return {k: v for k, v in asked if v}  # none asked, none recorded: older datasets compare equal


def trainer_options(req: PrepareRequest) -> list[str]:
    """The same options as `trainer prepare` (and `trainer make-dataset`) take them."""
    return [*(["--resize-short", str(req.resize_short)] if req.resize_short else []),
            *(["--resize-short-train", str(req.resize_short_train)] if req.resize_short_train else []),
            *(["--subset-percent", f"{req.subset_percent:g}"] if req.subset_percent else [])]


def _new_info(req: PrepareRequest, summary: dict, location: str) -> DatasetInfo:
    options = options_of(req)
    return DatasetInfo(name=req.name, kind=req.kind, source=req.source, location=location,
                       created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), options=options,
                       **summary)


def new_bucket_version(req: PrepareRequest) -> DatasetInfo:
    """What an instance prepares `req` as: a new version in the bucket, its counts read once it is there."""
    empty = dict(classes=0, train_images=0, val_images=0, bytes=0, shards=0)
    return _new_version(req, _new_info(req, empty, cloud_datasets.location(req.bucket, req.name)))


def prepare(req: PrepareRequest, say: Say = quiet) -> DatasetInfo:
    """Prepare and keep a dataset here (`--target local`), kept here or in the bucket. On an instance:
    data_instance.prepare_dataset."""
    source = check(req)
    if req.target != "local":
        raise ConfigError(f"--target {req.target}: prepared on an instance by data_instance.prepare_dataset")
    where = store.folder(req.name)
    work = where / "prepared"  # `trainer prepare` resumes into it after a cut
    extra = trainer_options(req)
    again = f"The prepared part is kept in {work}: the same command carries on from it."
    say(f"preparing {req.kind} from {source} into {work}")
    _trainer(["prepare", req.kind, "--source", str(source), "--dest", str(work), *extra], "trainer prepare", again)
    staging = where / "shards.new"
    say(f"packing it into shards in {where}")
    _trainer(["pack", "--data", str(work), "--out", str(staging)], "trainer pack", again)
    info = _new_info(req, store.summary_of(staging), str(where))
    if req.bucket:
        return with_cost(_keep_in_bucket(req, info, staging, say))
    store.remove_parts(req.name)  # --replace: the old one goes only now that the new one is whole
    staging.rename(store.shards_dir(req.name))
    store.save(info)
    shutil.rmtree(work, ignore_errors=True)
    return info


def _new_version(req: PrepareRequest, info: DatasetInfo) -> DatasetInfo:
    """`info` as a new version in the bucket, named by when it started: of two prepares of one name, the one
    started later is the newer (write_description)."""
    return replace(info, location=cloud_datasets.location(req.bucket, req.name),
                   version=datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S%f") + secrets.token_hex(3))


def write_description(info: DatasetInfo, region: str) -> None:
    """The description that makes `info`'s version the dataset, once each of its shards is in the bucket; then
    the older versions go (and what cut uploads left). Two prepares of one name at once: the newer version
    stays, whichever ends first (the description is swapped by a conditional write); the other is dropped."""
    for _ in range(5):
        body, etag = cloud_datasets.read_description(info.location, region)
        _drop_if_older(info, body, region)
        missing = _missing_shards(info, region)
        if missing:
            _drop_if_older(info, cloud_datasets.read_description(info.location, region)[0], region)
            raise FlowError(f"{len(missing)} file(s) of {info.name} are not whole in {shards_uri(info)} (e.g. "
                            f"{missing[0]}): removed meanwhile, by `orch data rm {info.name}`? Nothing was kept; "
                            "prepare it again")
        try:
            cloud_datasets.put_description(info.location, {k: v for k, v in asdict(info).items()
                                                           if k != "dollars_per_month"}, region, replacing=etag)
            break
        except cloud_datasets.Changed:
            continue  # another prepare swapped it first: read it again
    else:
        raise FlowError(f"the description of {info.name} kept changing under this prepare: run it again")
    for folder in cloud_datasets.folders(info.location, region):
        version = folder[len("shards-"):] if folder.startswith("shards-") else "" if folder == "shards" else None
        if version is not None and version < (info.version or ""):
            cloud_datasets.delete(info.location, region, folder=folder)


def _drop_if_older(info: DatasetInfo, kept: bytes | None, region: str) -> None:
    """Refused, and this version's upload removed, when the kept description names a newer version."""
    current = _version_in(kept)
    if current is not None and current > (info.version or ""):
        cloud_datasets.delete(info.location, region, folder=f"shards-{info.version}")
        raise FlowError(f"dataset {info.name} was kept meanwhile by a prepare started after this one (version "
                        f"{current}): that one stays, and this one (version {info.version}) is dropped")


def _missing_shards(info: DatasetInfo, region: str) -> list[str]:
    """The manifest, or the shards it names, not in the bucket at their size."""
    uri, where = shards_uri(info), f"{shards_uri(info)}/manifest.json"
    there = cloud_datasets.sizes(uri, region)
    if "manifest.json" not in there:
        return ["manifest.json"]
    entries = store.shard_entries(_manifest_json(cloud_datasets.manifest(uri, region), where), where)
    return [n for n, size in entries if there.get(n) != size]


def _version_in(body: bytes | None) -> str | None:
    """The version a stored description names ("" for one without), None when there is none to respect."""
    try:
        version = (json.loads(body).get("version") or "") if body else None
    except (ValueError, RecursionError, AttributeError):
        return None
    return version if isinstance(version, str) and store.VERSION.fullmatch(version or "0") else None


def summary_in_bucket(info: DatasetInfo, region: str) -> dict:
    """Classes, images, bytes and shards of `info`'s version, from its manifest in the bucket (checked)."""
    where = f"{shards_uri(info)}/manifest.json"
    return store.summary_from(_manifest_json(cloud_datasets.manifest(shards_uri(info), region), where), where)


def _keep_in_bucket(req: PrepareRequest, info: DatasetInfo, staging: Path, say: Say) -> DatasetInfo:
    """The shards uploaded under a new version, then the description that makes them the dataset, then any
    older version removed: a --replace that fails leaves the old dataset whole, and one that succeeds
    never mixes old and new shards (a machine restoring the old one meanwhile fails its checks, by name)."""
    info = _new_version(req, info)
    say(f"uploading {info.shards} shard(s), {info.bytes / 1e6:,.1f} MB, to {shards_uri(info)}")
    cloud_datasets.upload_shards(staging, shards_uri(info), req.region,
                                 on_progress=_every_few_seconds("uploaded", say))
    write_description(info, req.region)
    shutil.rmtree(store.folder(req.name), ignore_errors=True)  # the bucket holds it; nothing stays here
    return info


def shards_uri(info: DatasetInfo) -> str:
    """Where a kept dataset's manifest.json and shards are."""
    return f"{info.location}/shards-{info.version}" if info.version else f"{info.location}/shards"


def _every_few_seconds(what: str, say: Say, every_s: float = 5.0):
    """A (done, total) callback that says bytes, rate and time left every few seconds."""
    start = last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < every_s and done < total:
            return
        last = now
        rate = done / max(now - start, 1e-6)
        left = f", about {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        say(f"  {what} {done / 1e6:,.1f} of {total / 1e6:,.1f} MB ({rate / 1e6:,.1f} MB/s){left}")

    return progress


def find(name: str, bucket: str | None, region: str) -> DatasetInfo | None:
    """The dataset `name` kept here, else in the bucket (when one is set)."""
    here = store.get(name)
    if here is not None or not bucket:
        return here
    return next((d for d in _in_bucket(bucket, region) if d.name == name), None)


def _in_bucket(bucket: str, region: str) -> list[DatasetInfo]:
    """The datasets whose description is one orch writes, named as their folder; where each is comes from
    the bucket, not from what its description says."""
    found = []
    for name, raw in cloud_datasets.descriptions(bucket, region):
        if store.NAME_RE.fullmatch(name) and (info := store.info_from(raw, name, cloud_datasets.location(bucket, name))):
            found.append(with_cost(info))
    return found


def with_cost(info: DatasetInfo) -> DatasetInfo:
    if info.location.startswith("s3://"):
        return replace(info, dollars_per_month=round(info.bytes / 1e9 * S3_DOLLARS_PER_GB_MONTH, 2))
    return info


def list_datasets(bucket: str | None = None, region: str = "us-east-1") -> list[DatasetInfo]:
    """Those kept here, then those in the bucket (when one is set)."""
    return [with_cost(d) for d in store.all_datasets()] + (_in_bucket(bucket, region) if bucket else [])


def remove(name: str, bucket: str | None = None, region: str = "us-east-1") -> bool:
    store.check_name(name)
    removed = store.remove(name)
    if bucket:  # its description first, then everything under its name (an upload cut short too)
        removed = cloud_datasets.delete(cloud_datasets.location(bucket, name), region) > 0 or removed
    return removed


def for_instance(name: str, bucket: str | None, region: str) -> DatasetSource:
    """What an instance needs to restore `dataset:NAME` from the bucket; refused when it is not there."""
    store.check_name(name)
    if not bucket:
        raise ConfigError(f"--data dataset:{name} on an instance needs the bucket it is kept in: --bucket s3://NAME "
                          "(or bucket in config.toml)")
    info = next((d for d in _in_bucket(bucket, region) if d.name == name), None)
    if info is None:
        here = " (it is kept on this machine only: prepare it again with --bucket)" if store.get(name) else ""
        raise ConfigError(f"--data dataset:{name}: not in {bucket}{here}. Make it with `orch data prepare {name} "
                          f"--kind KIND --source DIR --bucket {bucket}`.")
    where = f"{shards_uri(info)}/manifest.json"
    raw = _manifest_json(cloud_datasets.manifest(shards_uri(info), region), where)
    return DatasetSource(name=name, uri=shards_uri(info), shards=store.shard_entries(raw, where),
                         manifest_key=store.manifest_key(raw))


def _manifest_json(body: bytes, where: str) -> dict:
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise ConfigError(f"{where} is not JSON orch writes: refused") from None
    store.shard_entries(raw, where)
    return raw


def _download(info: DatasetInfo, region: str, say: Say) -> None:
    """A bucket's dataset's shards into this machine's store: those already here at their size are kept,
    unless they belong to another version of it (then they all go first)."""
    here, where = store.shards_dir(info.name), f"{shards_uri(info)}/manifest.json"
    body = cloud_datasets.manifest(shards_uri(info), region)
    raw = _manifest_json(body, where)
    try:
        old = json.loads((here / "manifest.json").read_text())
        same = store.manifest_key(old) == store.manifest_key(raw)
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True, exist_ok=True)
    todo = [(n, size) for n, size in store.shard_entries(raw, where)
            if not ((here / n).is_file() and (here / n).stat().st_size == size)]
    say(f"  dataset {info.name}: downloading {len(todo)} shard(s) from {shards_uri(info)}")
    cloud_datasets.download_shards(shards_uri(info), todo, here, region,
                                   on_progress=_every_few_seconds("downloaded", say))
    (here / "manifest.json.partial").write_bytes(body)
    (here / "manifest.json.partial").replace(here / "manifest.json")  # last: the shards it names are here


def name_of(data: str) -> str | None:
    """NAME for `--data dataset:NAME`, else None."""
    return data[len(PREFIX):] if data.startswith(PREFIX) else None


def restore_here(name: str, say: Say = quiet, bucket: str | None = None, region: str = "us-east-1") -> str:
    """The folder a local job reads `dataset:NAME` from, restored from its shards (checked) when needed:
    from this machine's store, else downloaded from the bucket (a shard already here is not fetched again)."""
    info = find(store.check_name(name), bucket, region)
    if info is not None and info.location.startswith("s3://"):
        _download(info, region, say)
    if info is None:
        known = ", ".join(d.name for d in list_datasets(bucket, region)) or "none yet"
        where = f"here or in {bucket}" if bucket else "here (no bucket set: --bucket or bucket in config.toml)"
        raise ConfigError(f"--data dataset:{name}: no such dataset {where} (kept: {known}). Make it with "
                          f"`orch data prepare {name} --kind KIND --source DIR --target local`.")
    dest = store.data_dir(name)
    say(f"  dataset {name}: restoring {info.shards} shard(s) into {dest} (checked against the manifest; "
        "a copy restored before is reused)")
    _trainer(["unpack", "--shards", str(store.shards_dir(name)), "--dest", str(dest)], "trainer unpack",
             "The same launch carries on with the shards not yet restored.")
    return str(dest)
