"""`trainer`: train, evaluate, predict, export, lr-find, demo-data (and `prepare`, `verify`).

Heavy imports (torch) happen inside the commands, so `trainer --help` is instant.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from trainer.errors import TrainerError
from trainer.prepare.cli import prepare_app, verify_command

app = typer.Typer(
    help="Train image classifiers from random weights, resume anywhere, and report like a lab notebook.\n\n"
         "\b\nExample: trainer demo-data --dest /tmp/demo && trainer train --data /tmp/demo --out /tmp/run --recipe demo",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # Plain click help: rich's option table truncates long option names (--checkpoint-min…) at 80
    # columns. Each "Example" paragraph is marked \b so click prints it unwrapped, ready to copy.
    rich_markup_mode=None,
)
app.add_typer(prepare_app, name="prepare")
app.command("verify")(verify_command)


@contextlib.contextmanager
def user_errors(where: Path | None = None):
    """A TrainerError is the user's to fix: print it (no traceback) and exit with its code."""
    try:
        yield
    except TrainerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.code) from None
    except OSError as exc:
        import errno
        from trainer.errors import EXIT_DISK
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        typer.echo(f"error: could not write {exc.filename or where or 'the run folder'}: {exc.strerror}. Checkpoints already "
                   "written were kept. Free disk space and resume with `trainer train ... --resume auto`.", err=True)
        raise typer.Exit(EXIT_DISK) from None


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise TrainerError(f"--set expects KEY=VALUE, got {pair!r} (for example --set crop_scale=0.35,1).")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


@app.command()
def train(
    data: Path = typer.Option(..., help="Dataset folder with train/<class>/* and val/<class>/*."),
    out: Path = typer.Option(..., help="Run folder: checkpoints/, metrics.jsonl, train.log, curves.png, config.json."),
    recipe: Optional[str] = typer.Option(None, help="Recipe name in trainer/recipes (see `trainer recipes`) or a .toml path."),
    arch: Optional[str] = typer.Option(None, help="Model: resnet_small, simple_cnn, or any torchvision classifier (resnet50...)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs to train."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step per process."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate per lr_scale_batch images (default 256)."),
    schedule: Optional[str] = typer.Option(None, help="step | cosine | onecycle | linear | constant."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warmup epochs (step, cosine, linear)."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay on conv/linear weights."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing."),
    train_res: Optional[int] = typer.Option(None, help="Train crop size in px (final, with progressive resizing)."),
    train_res_start: Optional[int] = typer.Option(None, help="Progressive resizing: first-epoch crop size (0: off)."),
    eval_res: Optional[int] = typer.Option(None, help="Eval centre-crop size in px."),
    tta: Optional[str] = typer.Option(None, help="flip: also report val top-1 of the image and its mirror averaged, "
                                                 "beside the plain figure (none: off)."),
    width: Optional[int] = typer.Option(None, help="Our models: channels of the first stage."),
    init_weights: Optional[str] = typer.Option(
        None, help="Fine-tune: start from `imagenet` (torchvision's weights for --arch) or a weights file (.pth "
                   "state_dict, DataParallel's too, or a trainer checkpoint); other-shaped layers start random."),
    precision: Optional[str] = typer.Option(None, help="auto | fp16 | bf16 | fp32."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory format."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs",
                                               help="Replay each step's forward and backward as a CUDA graph (GPU only; default on)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers per process."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N."),
    seed: Optional[int] = typer.Option(None, help="Seed for init, shuffling and augmentation."),
    target_top1: Optional[float] = typer.Option(None, help="Stop once val top-1 (percent) reaches this."),
    max_hours: Optional[float] = typer.Option(None, help="Save and stop before this many hours of training (all resumes together)."),
    checkpoint_minutes: Optional[float] = typer.Option(None, help="Also save last.pt every N minutes inside an epoch."),
    set_: List[str] = typer.Option([], "--set", help="Any other setting as KEY=VALUE (repeatable), e.g. --set crop_scale=0.35,1."),
    resume: str = typer.Option("auto", help="auto: continue from OUT/checkpoints/last.pt if present; none: start over; or a checkpoint path."),
    stop_file: Optional[Path] = typer.Option(None, help="Save and stop cleanly when this file appears."),
    watch_spot: bool = typer.Option(False, "--watch-spot", help="Poll EC2 metadata for a spot interruption notice; save and stop."),
    nproc: str = typer.Option("auto", help="Training processes: auto = one per GPU (DDP) when there are several, "
                                           "else one; or a number (N gloo processes on a CPU)."),
    nnodes: int = typer.Option(1, min=1, help="Machines in the run (with --node-rank and --master on each): "
                                              "--nproc processes on each, one DDP run over them all."),
    node_rank: int = typer.Option(0, min=0, help="This machine's place among --nnodes: 0 is the one with --master, "
                                                 "whose first process alone writes checkpoints and metrics."),
    master: Optional[str] = typer.Option(None, help="HOST:PORT of node 0, reachable from every node (its private "
                                                    "address), where the run's processes meet."),
) -> None:
    """Train a classifier from random weights (or fine-tune one: --init-weights).

    \b
    Example: trainer train --data /data/imagenet --out /runs/r50 --recipe t4-rn50

    Every setting a recipe and your flags resolve to, and what each means: trainer settings --recipe NAME.
    Several GPUs: one process each (DDP) by itself (--nproc auto); torchrun -m trainer train ... works too.
    Several machines: on each, the same command with --nnodes N --node-rank I --master NODE0_ADDRESS:29500.
    Exit 0 when done (or at --max-hours / --target-top1); 130/143 after Ctrl-C/SIGTERM, once last.pt is saved.
    """
    with user_errors(where=out):
        from trainer.config import resolve
        from trainer.train import train as run_training
        flags = dict(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, warmup_epochs=warmup_epochs,
                     weight_decay=weight_decay, label_smoothing=label_smoothing, train_res=train_res,
                     train_res_start=train_res_start, eval_res=eval_res, tta=tta, width=width, init_weights=init_weights,
                     precision=precision,
                     channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs, workers=workers, device=device, seed=seed,
                     target_top1=target_top1, max_hours=max_hours, checkpoint_minutes=checkpoint_minutes)
        flags.update(_parse_sets(set_))
        config = resolve(recipe, flags)
        from trainer.launch import Nodes, launching, processes_wanted, run_per_process
        nodes = Nodes.checked(nnodes, node_rank, master)
        n = processes_wanted(nproc, config.device)
        if launching(n, nodes):
            if nodes.count > 1:
                typer.echo(f"node {nodes.rank} of {nodes.count} (node 0 at {nodes.master}): {n} training process(es) "
                           f"here, {n * nodes.count} in all (DDP), global batch {n * nodes.count} x {config.batch_size}",
                           err=True)
            else:
                typer.echo(f"{n} training processes (DDP: one per GPU where there are GPUs), global batch {n} x "
                           f"{config.batch_size}; --nproc 1 trains in one", err=True)
            raise typer.Exit(run_per_process(n, sys.argv[1:], nodes))
        code = run_training(config, data, out, resume=resume, stop_file=stop_file, watch_spot=watch_spot, argv=sys.argv)
    raise typer.Exit(code)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="Dataset folder (its val/ split is used)."),
    checkpoint: Path = typer.Option(..., help="A checkpoint: OUT/checkpoints/best.pt or last.pt."),
    split: str = typer.Option("val", help="val or train."),
    batch_size: int = typer.Option(128, help="Images per batch."),
    workers: int = typer.Option(4, help="DataLoader workers."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    tta: str = typer.Option("none", help="flip: also score the image and its mirror averaged (the `*_flip` figures)."),
    res: str = typer.Option("", help="Also evaluate at these centre crops, e.g. 160,192,224,256 (resized in the "
                                     "checkpoint's own crop/resize ratio): the `by_res` table."),
    recalibrate_bn: int = typer.Option(0, help="At each --res, also score after re-estimating BatchNorm statistics "
                                               "on N batches of train images framed that way (FixRes)."),
    out: Optional[Path] = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Top-1, top-5, loss and per-class accuracy of a checkpoint, as JSON on stdout.

    The top-level figures are at the checkpoint's own eval framing (its recipe's). With --res, a table
    of top-1 per resolution goes to stderr as well.

    \b
    Example: trainer evaluate --data /data/imagenet --checkpoint /runs/r50/checkpoints/best.pt
    Example: trainer evaluate --data /data/imagenet --checkpoint best.pt --tta flip --res 160,192,224,256 --recalibrate-bn 50
    """
    with user_errors():
        from trainer.evaluate import evaluate_checkpoint
        if split not in ("val", "train"):
            raise TrainerError(f"--split must be val or train, not {split!r}.")
        try:
            resolutions = tuple(int(r) for r in res.replace(" ", "").split(",") if r)
        except ValueError:
            raise TrainerError(f"--res {res!r}: give crop sizes in px separated by commas, e.g. --res 160,192,224.") from None
        result = evaluate_checkpoint(checkpoint, data, split, batch_size, workers, device,
                                     warn=lambda message: typer.echo(f"warning: {message}", err=True), tta=tta,
                                     resolutions=resolutions, recalibrate_bn=recalibrate_bn)
        text = json.dumps(result, indent=1)
        if out:
            out.write_text(text + "\n")
        typer.echo(text)
        if result.get("by_res"):
            typer.echo(_resolution_table(result), err=True)


def _resolution_table(result: dict) -> str:
    """top-1 per resolution, as a person compares them."""
    flip = result["tta"] == "flip"
    tuned = "recalibrated_bn" in result["by_res"][0]
    head = ["crop", "resize", "top-1"] + (["flip"] if flip else []) + (["BN recal.", "flip"][: 1 + flip] if tuned else [])
    rows = []
    for e in result["by_res"]:
        cells = [str(e["res"]), str(e["resize"]), f"{e['top1']:.2f}%"] + ([f"{e['top1_flip']:.2f}%"] if flip else [])
        if tuned:
            r = e["recalibrated_bn"]
            cells += [f"{r['top1']:.2f}%"] + ([f"{r['top1_flip']:.2f}%"] if flip else [])
        rows.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    own = f"the checkpoint's own framing: crop {result['res']}, resize {result['resize']}: top-1 {result['top1']:.2f}%"
    return "\n".join(lines + [own])


@app.command()
def predict(
    images: List[Path] = typer.Argument(..., help="Image files."),
    checkpoint: Path = typer.Option(..., help="A checkpoint: OUT/checkpoints/best.pt."),
    top: int = typer.Option(5, min=1, help="How many classes to show."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Top-5 classes (names from dataset.json when it had them) and probabilities per image.

    \b
    Example: trainer predict --checkpoint /runs/r50/checkpoints/best.pt cat.jpg dog.jpg
    """
    with user_errors():
        from trainer.predict import predict as run_predict
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise TrainerError(f"no such image file(s): {', '.join(missing)}")
        results = run_predict(checkpoint, images, top)
        if as_json:
            typer.echo(json.dumps([{"image": r.image, "top": [{"class": c, "name": n, "prob": p} for c, n, p in r.top]}
                                   for r in results], indent=1))
            return
        for r in results:
            typer.echo(r.image)
            for cls, name, prob in r.top:
                typer.echo(f"  {100 * prob:6.2f}%  {name}" + (f"  ({cls})" if name != cls else ""))


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="A checkpoint: OUT/checkpoints/best.pt."),
    format: str = typer.Option("onnx", help="onnx | torchscript."),
    out: Path = typer.Option(..., help="Output file (e.g. model.onnx); metadata goes to <out>.json."),
    opset: int = typer.Option(17, help="ONNX opset."),
    dynamo: bool = typer.Option(False, "--dynamo", help="Use torch.export's ONNX exporter (slower; torch >= 2.5)."),
) -> None:
    """Export for deployment (Jetson / TensorRT) and check it matches the checkpoint.

    \b
    Example: trainer export --checkpoint /runs/r50/checkpoints/best.pt --format onnx --out r50.onnx
    """
    with user_errors():
        from trainer.export import export as run_export
        result = run_export(checkpoint, format, out, opset=opset, dynamo=dynamo)
        check = f"max |difference| vs checkpoint {result.max_abs_diff:.2e}" if result.max_abs_diff is not None else "not checked (no onnxruntime)"
        typer.echo(f"wrote {result.path} and {result.metadata_path}; {check}")


@app.command("lr-find")
def lr_find(
    data: Path = typer.Option(..., help="Dataset folder (train/ is used)."),
    out: Path = typer.Option(..., help="Folder for lr_find.png and lr_find.json."),
    recipe: Optional[str] = typer.Option(None, help="Recipe name or .toml path."),
    arch: Optional[str] = typer.Option(None, help="Model name."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step."),
    steps: int = typer.Option(100, min=10, help="Steps of the range test (at least 10)."),
    start_lr: float = typer.Option(1e-5, help="First LR (the raw LR at --batch-size, not per 256 images)."),
    end_lr: float = typer.Option(10.0, help="Last LR (raw, as --start-lr)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
    set_: List[str] = typer.Option([], "--set", help="Other settings as KEY=VALUE."),
) -> None:
    """LR range test: loss vs LR plot and the --lr to pass to `trainer train` (one-cycle peak).

    The test runs at --batch-size and finds a peak LR for that batch; what it prints is the --lr
    that gives it: per lr_scale_batch images (default 256), which `trainer train` scales linearly
    to its global batch.

    \b
    Example: trainer lr-find --data /data/tiny-imagenet --out /runs/lrf --arch resnet18 --batch-size 256 --steps 200
    """
    with user_errors():
        from trainer.config import resolve
        from trainer.lrfind import describe, lr_find as run_lr_find
        if not 0 < start_lr < end_lr:
            raise TrainerError(f"--start-lr {start_lr:g} and --end-lr {end_lr:g}: the range test sweeps up, so "
                               f"0 < --start-lr < --end-lr (e.g. 1e-5 to 10).")
        flags = dict(arch=arch, batch_size=batch_size, device=device)
        flags.update(_parse_sets(set_))
        result = run_lr_find(resolve(recipe, flags), data, out, start_lr, end_lr, steps)
        typer.echo(f"suggested (one-cycle): {describe(result)}\nplot: {result.plot}\ndata: {result.data}")


@app.command("demo-data")
def demo_data(
    dest: Path = typer.Option(..., help="Folder to write train/, val/ and dataset.json into."),
    classes: int = typer.Option(8, help="Number of classes."),
    per_class: int = typer.Option(60, help="Train images per class (val gets a fifth)."),
    val_per_class: int = typer.Option(0, help="Val images per class (0: a fifth of --per-class)."),
    size: int = typer.Option(32, help="Image size in px."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write a small generated dataset (coloured shapes on noise) that a small model learns in seconds.

    \b
    Example: trainer demo-data --dest /tmp/demo && trainer train --data /tmp/demo --out /tmp/run --recipe demo
    """
    with user_errors():
        if classes < 2 or per_class < 1 or size < 8:
            raise TrainerError("--classes must be >= 2, --per-class >= 1 and --size >= 8.")
        from trainer.demodata import generate
        s = generate(dest, classes, per_class, val_per_class, size, seed)
        typer.echo(f"wrote {s.train_images} train and {s.val_images} val images in {len(s.classes)} classes to {s.dest}")


def _bytes_progress(what: str):
    """A progress bar in bytes with rate and ETA on stderr; yields the (done, total) callback."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    progress = Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=False)
    task = progress.add_task(what, total=None)

    def advance(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, advance


@app.command()
def pack(
    data: Path = typer.Option(..., "--data", help="A prepared dataset folder (train/, val/, dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and manifest.json (outside --data)."),
    shard_mb: int = typer.Option(512, "--shard-mb", min=1, help="About this many MB per shard."),
) -> None:
    """Pack a prepared dataset into large tar shards and a manifest (sizes, SHA-256s, classes, images):
    how a dataset is kept in a bucket and restored fast.

    \b
    Example: trainer pack --data /data/imagenet --out /staging/imagenet && aws s3 sync /staging/imagenet s3://b/datasets/imagenet
    """
    from trainer.shards import ShardError, pack as pack_shards

    progress, advance = _bytes_progress("pack")
    try:
        with progress:
            m = pack_shards(data, out, shard_mb << 20, on_progress=advance)
    except ShardError as e:
        typer.echo(f"trainer pack: {e}", err=True)
        raise typer.Exit(1)
    splits = ", ".join(f"{v['images']:,} {k} images in {v['classes']} classes" for k, v in m.splits.items())
    typer.echo(f"packed {m.files:,} files ({m.bytes / 1e6:,.1f} MB) into {len(m.shards)} shards in {out}: {splits}")


@app.command("make-dataset")
def make_dataset(
    kind: str = typer.Argument(..., help="imagenet, tiny-imagenet, cifar100 or folder."),
    source: Path = typer.Option(..., "--source", help="The files as downloaded (archives or extracted)."),
    work: Path = typer.Option(..., "--work", help="Folder `trainer prepare` writes into (kept: a rerun resumes)."),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and manifest.json."),
    resize_short: Optional[int] = typer.Option(None, "--resize-short", min=8, help="As `trainer prepare`'s."),
    resize_short_train: Optional[int] = typer.Option(None, "--resize-short-train", min=8,
                                                     help="As `trainer prepare`'s: train/ alone at this short side."),
    subset_percent: Optional[float] = typer.Option(None, "--subset-percent", help="As `trainer prepare`'s."),
    shard_mb: int = typer.Option(512, "--shard-mb", min=1, help="About this many MB per shard."),
) -> None:
    """`trainer prepare KIND`, `trainer verify`, then `trainer pack`: the download made into a kept dataset's
    checked shards in one command (what `orch data prepare --target aws` runs on its instance). A rerun carries on.

    \b
    Example: trainer make-dataset imagenet --source /data --work /outputs/prepared --out /outputs/shards --resize-short 256
    """
    import subprocess

    if kind not in ("imagenet", "tiny-imagenet", "cifar100", "folder"):
        typer.echo(f"trainer make-dataset: kind {kind!r}: use imagenet, tiny-imagenet, cifar100 or folder", err=True)
        raise typer.Exit(2)
    options = [*(["--resize-short", str(resize_short)] if resize_short else []),
               *(["--resize-short-train", str(resize_short_train)] if resize_short_train else []),
               *(["--subset-percent", f"{subset_percent:g}"] if subset_percent else [])]
    steps = [["prepare", kind, "--source", str(source), "--dest", str(work), *options],
             ["verify", "--data", str(work)],  # every image decoded, every count checked: before it is kept
             ["pack", "--data", str(work), "--out", str(out), "--shard-mb", str(shard_mb)]]
    if (out / "manifest.json").is_file():  # pack writes it last: a run that got this far is done
        typer.echo(f"trainer make-dataset: {out} holds a packed dataset already; nothing to do", err=True)
        return
    for step in steps:
        typer.echo(f"== trainer {' '.join(step[:2])}", err=True)
        code = subprocess.run([sys.executable, "-m", "trainer", *step], stdin=subprocess.DEVNULL).returncode
        if code != 0:
            raise typer.Exit(code)


@app.command()
def unpack(
    shards: Path = typer.Option(..., "--shards", help="A folder written by `trainer pack` (manifest.json + shards)."),
    dest: Path = typer.Option(..., "--dest", help="Folder to restore the dataset into."),
    workers: int = typer.Option(4, "--workers", min=1, help="Shards checked and extracted at once."),
    delete_shards: bool = typer.Option(False, "--delete-shards", help="Remove each shard once extracted."),
) -> None:
    """Check every shard against the manifest (size, SHA-256, member names) and restore the dataset.
    Interrupted, the same command carries on with the shards not yet done.

    \b
    Example: trainer unpack --shards /staging/imagenet --dest /data/imagenet --delete-shards
    """
    from trainer.shards import ShardError, unpack as unpack_shards

    progress, advance = _bytes_progress("unpack")
    try:
        with progress:
            r = unpack_shards(shards, dest, workers, delete_shards, on_progress=advance)
    except ShardError as e:
        typer.echo(f"trainer unpack: {e}. Shards already restored are kept; the same command carries on.", err=True)
        raise typer.Exit(1)
    rate = r.bytes / r.seconds / 1e6 if r.seconds > 0 else 0.0
    typer.echo(f"restored {r.files:,} files ({r.bytes / 1e6:,.1f} MB, {rate:,.0f} MB/s) from {r.shards - r.shards_skipped} "
               f"shards into {dest}" + (f"; {r.shards_skipped} were already done" if r.shards_skipped else ""))


@app.command()
def recipes() -> None:
    """List the recipe files and what each sets.

    \b
    Example: trainer recipes
    """
    from trainer.config import available_recipes, load_recipe
    for name in available_recipes():
        values = load_recipe(name)
        typer.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@app.command()
def settings(
    recipe: Optional[str] = typer.Option(None, help="Recipe name (see `trainer recipes`) or a .toml path."),
    set_: List[str] = typer.Option([], "--set", help="A setting as KEY=VALUE (repeatable), as `trainer train --set`."),
) -> None:
    """Every setting `trainer train` would use, resolved: its value, where it comes from, what it means.

    Nothing is trained; the settings are checked as training checks them. Every name here is a
    KEY for `trainer train --set KEY=VALUE` (the named flags such as --lr are shorthands).

    \b
    Example: trainer settings --recipe t4-rn18-fast --set epochs=20
    """
    with user_errors():
        from rich.console import Console
        from rich.table import Table

        from trainer.config import resolve, setting_help, setting_sources, to_dict
        overrides = _parse_sets(set_)
        values = to_dict(resolve(recipe, overrides))
        sources, meaning = setting_sources(recipe, overrides), setting_help()
        table = Table("setting", "value", "from", "meaning", title=f"trainer train --recipe {recipe}" if recipe
                      else "trainer train (no recipe: the defaults)", title_justify="left")
        for name, value in values.items():
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            table.add_row(name, shown, sources[name], meaning.get(name, ""),
                          style="bold" if sources[name] != "default" else None)
        Console(highlight=False).print(table)


@app.command()
def models() -> None:
    """List the model names `--arch` accepts.

    \b
    Example: trainer models
    """
    from trainer.models import available_models
    typer.echo("\n".join(available_models()))


def main() -> None:
    from trainer.envfile import load_or_exit

    load_or_exit()  # --env values from a launcher, before any command runs
    app()


if __name__ == "__main__":
    main()
