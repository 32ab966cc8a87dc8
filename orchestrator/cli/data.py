"""`orch data prepare|list|rm`: datasets orch prepares once, from the files as downloaded, and keeps."""
from __future__ import annotations

from typing import Optional

import typer

from orchestrator.cli.app import app, err, errors, json_option, out, out_json, settings

data_app = typer.Typer(help="Datasets orch prepares once and keeps; a job reads one with --data dataset:NAME.\n\n"
                            "\b\nExample: orch data prepare cifar --kind cifar100 --source ~/downloads --target local",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


def bucket_option():
    return typer.Option(None, "--bucket", help="s3://NAME: the bucket datasets are kept in, under orch-datasets/ "
                                               "(default: bucket in config.toml, or $ORCH_BUCKET).")


def region_option():
    return typer.Option(None, "--region", help="The bucket's region, e.g. us-east-1 (default: the configured one).")


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


@data_app.command("prepare")
def prepare(
    name: str = typer.Argument(..., help="The dataset's name, e.g. imagenet-256 (then --data dataset:imagenet-256)."),
    kind: str = typer.Option(..., "--kind", help="imagenet, tiny-imagenet, cifar100 or folder (any <class>/<images>)."),
    source: str = typer.Option(..., "--source", help="The files as downloaded: a folder (archives or extracted); "
                                                     "with --target aws also an s3:// prefix (copied there) or "
                                                     "kaggle:COMPETITION (downloaded there with your Kaggle "
                                                     "token)."),
    resize_short: Optional[int] = typer.Option(None, "--resize-short", min=8,
                                               help="Store JPEGs with the short side at this many px, e.g. 256."),
    resize_short_train: Optional[int] = typer.Option(
        None, "--resize-short-train", min=8,
        help="Store train/ alone at this short side, e.g. 192 (val keeps --resize-short); the trade-off: "
             "`trainer prepare imagenet --help`."),
    subset_percent: Optional[float] = typer.Option(None, "--subset-percent",
                                                   help="Keep a seeded P% of the classes, e.g. 10 for a prototype."),
    target: str = typer.Option("local", "--target", help="local: prepare here; aws: on an instance (--instance), "
                                                         "kept in the bucket."),
    instance: Optional[str] = typer.Option(None, "--instance", help="With --target aws: the instance type that "
                                                                    "prepares (default c6i.4xlarge, 16 vCPUs)."),
    replace: bool = typer.Option(False, "--replace", help="Prepare again a dataset of this name."),
    bucket: Optional[str] = bucket_option(),
    region: Optional[str] = region_option(),
    as_json: bool = json_option(),
) -> None:
    """Prepare a dataset from the files as downloaded, check it, and keep it as shards (a job restores them).

    Interrupted, the same command carries on from what was prepared. With a bucket, the shards go
    there (and nothing stays here): a job on any machine restores them. With --target aws an
    instance prepares it (a folder here is sent to it once; an s3:// prefix it copies with its
    role), keeps it in the bucket, is torn down, and the command says what it cost.

    \b
    Example: orch data prepare tiny --kind tiny-imagenet --source ~/downloads/tiny-imagenet-200.zip --target local
    Example: orch data prepare imagenet-256 --kind imagenet --source s3://my-bucket/ilsvrc2012/ --target aws --resize-short 256

    \b
    Example: orch data prepare imagenet-256 --kind imagenet --source kaggle:imagenet-object-localization-challenge --target aws --resize-short 256
    """
    from orchestrator.lifecycle import data_instance, datasets

    with errors():
        s = settings(bucket=bucket, region=region)
        info = data_instance.prepare_dataset(datasets.PrepareRequest(
            name=name, kind=kind, source=source, resize_short=resize_short,
            resize_short_train=resize_short_train, subset_percent=subset_percent,
            target=target, replace=replace, bucket=s.bucket, region=s.region, instance=instance), s, say=err)
        if as_json:
            out_json(info)
            return
        out(f"Dataset {info.name}: {info.classes} classes, {info.train_images:,} train and {info.val_images:,} val "
            f"images, {_size(info.bytes)} in {info.shards} shard(s) at {info.location}")
        out(f"Train on it: orch launch --target {target} --data dataset:{info.name} -- --recipe ...")


@data_app.command("list")
def list_(bucket: Optional[str] = bucket_option(), region: Optional[str] = region_option(),
          as_json: bool = json_option()) -> None:
    """The datasets orch keeps: kind, classes, images, size, where, and what storing them costs a month.

    \b
    Example: orch data list --json
    """
    from orchestrator.lifecycle import datasets

    with errors():
        s = settings(bucket=bucket, region=region)
        found = datasets.list_datasets(s.bucket, s.region)
        if as_json:
            out_json(found)
            return
        if not found:
            out("No datasets yet. Make one: orch data prepare NAME --kind KIND --source DIR --target local")
            return
        rows = [("NAME", "KIND", "CLASSES", "TRAIN", "VAL", "SIZE", "$/MONTH", "LOCATION")]
        for d in found:
            cost = f"{d.dollars_per_month:.2f}" if d.dollars_per_month is not None else "-"
            rows.append((d.name, d.kind, str(d.classes), f"{d.train_images:,}", f"{d.val_images:,}", _size(d.bytes),
                         cost, d.location))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            out("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@data_app.command("rm")
def rm(name: str = typer.Argument(..., help="The dataset to delete, e.g. imagenet-256."),
       yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
       bucket: Optional[str] = bucket_option(), region: Optional[str] = region_option()) -> None:
    """Delete a kept dataset (its shards and its restored copy). Jobs' outputs are not touched.

    \b
    Example: orch data rm imagenet-256 --yes
    """
    from orchestrator.lifecycle import datasets

    with errors():
        if not yes and not typer.confirm(f"Delete dataset {name}?"):
            raise typer.Exit(1)
        s = settings(bucket=bucket, region=region)
        if not datasets.remove(name, s.bucket, s.region):
            err(f"No dataset {name!r} here (`orch data list`).")
            raise typer.Exit(1)
        out(f"Deleted dataset {name}.")
