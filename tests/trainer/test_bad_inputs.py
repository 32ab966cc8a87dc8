"""Bad input gives a clear message and exit code, never a traceback or lost work."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.trainer.conftest import TINY, cli, metrics


def assert_clean_error(result, *phrases: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


def test_missing_data_directory(tmp_path):
    result = cli("train", "--data", tmp_path / "nope", "--out", tmp_path / "out", *TINY)
    assert_clean_error(result, "does not exist", "trainer demo-data")


def test_empty_class_folder_is_named(data_copy, tmp_path):
    emptied = sorted((data_copy / "train").iterdir())[1]
    for image in emptied.iterdir():
        image.unlink()
    result = cli("train", "--data", data_copy, "--out", tmp_path / "out", *TINY)
    assert_clean_error(result, "hold no images", str(emptied))


def test_no_val_split(data_copy, tmp_path):
    shutil.rmtree(data_copy / "val")
    result = cli("train", "--data", data_copy, "--out", tmp_path / "out", *TINY)
    assert_clean_error(result, "no val split", str(data_copy / "val"))
    fix = f"trainer prepare folder --source {data_copy} --dest NEW_FOLDER --val-percent 10"
    assert fix in result.output
    done = cli(*fix.replace("NEW_FOLDER", str(tmp_path / "split")).split()[1:])   # the fix it names works
    assert done.exit_code == 0, done.output
    classes = sorted(p.name for p in (data_copy / "train").iterdir())
    assert sorted(p.name for p in (tmp_path / "split" / "val").iterdir() if any(p.iterdir())) == classes


def test_corrupt_jpeg_is_skipped_counted_and_reported(data_copy, tmp_path):
    victim = sorted((data_copy / "train").glob("*/*.jpg"))[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "out"
    result = cli("train", "--data", data_copy, "--out", out, *TINY, "--epochs", "1")
    assert result.exit_code == 0, result.output
    [row] = metrics(out)
    assert row["skipped_images"] in (0, 1)   # 0 only when it fell in the dropped last partial batch
    log = (out / "train.log").read_text()
    if row["skipped_images"]:
        assert str(victim) in log and "skipped unreadable image" in log


def test_corrupt_val_jpeg_is_skipped_by_evaluate(data_copy, trained_run):
    victim = sorted((data_copy / "val").glob("*/*.jpg"))[0]
    victim.write_bytes(b"garbage")
    result = cli("evaluate", "--data", data_copy, "--checkpoint", trained_run / "checkpoints" / "best.pt", "--workers", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 47 and report["skipped_images"] == 1


def test_resume_with_another_architecture_is_refused_and_keeps_the_checkpoint(demo_data, trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = (out / "checkpoints" / "last.pt").read_bytes()
    args = [a if a != "resnet_small" else "simple_cnn" for a in TINY]
    result = cli("train", "--data", demo_data, "--out", out, *args, "--epochs", "3")
    assert_clean_error(result, "is for arch 'resnet_small', not 'simple_cnn'", "--arch resnet_small")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_or_evaluate_on_other_classes_is_refused(demo_data, trained_run, tmp_path):
    other = tmp_path / "other"
    assert cli("demo-data", "--dest", other, "--classes", "5", "--per-class", "20", "--size", "16").exit_code == 0
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    result = cli("train", "--data", other, "--out", out, *TINY, "--epochs", "3")
    assert_clean_error(result, "trained on 4 classes but the data has 5")
    result = cli("evaluate", "--data", other, "--checkpoint", out / "checkpoints" / "best.pt", "--workers", "0")
    assert_clean_error(result, "trained on 4 classes")


def test_every_checkpoint_copy_corrupt_is_a_clear_error(demo_data, trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    for name in ("last.pt", "last.prev.pt"):
        (out / "checkpoints" / name).write_bytes(b"torn")
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "3")
    assert_clean_error(result, "no usable checkpoint", "--resume none")


def test_predict_and_export_with_a_missing_or_foreign_checkpoint(tmp_path):
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")
    assert_clean_error(cli("predict", "--checkpoint", tmp_path / "none.pt", image), "does not exist")
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert_clean_error(cli("export", "--checkpoint", bogus, "--out", tmp_path / "m.onnx"), "cannot be read")


@pytest.mark.parametrize("args,phrases", [
    (["--recipe", "no-such-recipe"], ["unknown recipe 'no-such-recipe'", "fashion-mnist"]),
    (["--set", "learning_rate=0.1"], ["unknown setting(s) learning_rate", "Valid settings:", "lr"]),
    (["--set", "epochs=lots"], ["setting 'epochs' got 'lots'"]),
    (["--schedule", "exponential"], ["schedule 'exponential' is not one of"]),
    (["--arch", "resnet9000"], ["unknown architecture 'resnet9000'"]),
    (["--set", "nokey"], ["--set expects KEY=VALUE"]),
    # Divisors: refused before training, not a ZeroDivisionError after the first epoch.
    (["--set", "eval_every=0"], ["eval_every must be at least 1"]),
    (["--set", "warmup_div=0"], ["warmup_div must be positive"]),
    (["--set", "std=0.2,0,0.2"], ["std positive"]),
    # Values that used to pass and then crash (a traceback) or train nothing (every crop failing).
    (["--set", "crop_scale=2"], ["crop_scale must be two numbers"]),
    (["--set", "crop_ratio=2"], ["crop_ratio must be two numbers"]),
    (["--set", "crop_ratio=1.5,0.5"], ["crop_ratio must be two numbers 0 < lo <= hi"]),
    (["--width", "0"], ["width must be at least 1"]),
    (["--set", "depths=0,0,0"], ["depths one or more blocks"]),
    (["--set", "dropout=1.5"], ["dropout must be at least 0 and below 1"]),
    (["--set", "label_smoothing=2"], ["label_smoothing must be"]),
    (["--set", "momentum=5"], ["momentum must be at least 0 and below 1"]),
])
def test_bad_settings(demo_data, tmp_path, args, phrases):
    result = cli("train", "--data", demo_data, "--out", tmp_path / "out", *TINY, *args)
    assert_clean_error(result, *phrases)


def test_recipe_with_an_unknown_key_lists_valid_ones(demo_data, tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[train]\nepochs = 2\nbatchsize = 64\n")
    result = cli("train", "--data", demo_data, "--out", tmp_path / "out", "--recipe", recipe)
    assert_clean_error(result, "unknown setting(s) batchsize", str(recipe), "batch_size")
    recipe.write_text("epochs = = 2")
    assert_clean_error(cli("train", "--data", demo_data, "--out", tmp_path / "out", "--recipe", recipe), "not valid TOML")


def test_a_second_trainer_on_the_same_run_folder_is_refused_and_changes_nothing(demo_data, trained_run, tmp_path):
    """Two trainers writing one --out would interleave metrics and overwrite checkpoints."""
    import subprocess
    import sys

    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    # The first trainer, as far as the lock is concerned: a process holding OUT's run lock.
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from trainer.runlock import hold; h = hold(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(120)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
        result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "3")
        assert_clean_error(result, f"another trainer (pid {holder.pid}) is training into {out}", "Nothing was changed")
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    finally:
        holder.kill()
        holder.wait()
    # Its end (even by SIGKILL) frees the folder: the run continues.
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "3")
    assert result.exit_code == 0, result.output


def test_a_single_class_is_refused(data_copy, tmp_path):
    for split in ("train", "val"):
        for folder in sorted((data_copy / split).iterdir())[1:]:
            shutil.rmtree(folder)
    (data_copy / "dataset.json").unlink()   # a plain ImageFolder with one class
    result = cli("train", "--data", data_copy, "--out", tmp_path / "out", *TINY, "--epochs", "1")
    assert_clean_error(result, "has 1 class folder", "needs at least 2")


def test_val_missing_some_train_classes_is_a_warning_naming_them(data_copy, tmp_path):
    from trainer.data import load_dataset

    assert load_dataset(data_copy).warnings == ()
    gone = sorted((data_copy / "val").iterdir())[1]
    shutil.rmtree(gone)
    info = load_dataset(data_copy)   # still loads: a warning, not an error
    assert len(info.classes) == 4 and {info.classes[i] for _, i in info.val} == set(info.classes) - {gone.name}
    [warning] = info.warnings
    assert f"val/ has no folder for 1 of the 4 train classes: {gone.name}." in warning
    assert "measured over the other 3 classes while the model predicts all 4" in warning

    many = tmp_path / "many"   # the first 5 by name, then a count
    for c in range(8):
        for split in ("train", "val") if c == 0 else ("train",):
            (many / split / f"c{c}").mkdir(parents=True)
            (many / split / f"c{c}" / "1.jpg").write_bytes(b"")   # listed, not decoded
    [warning] = load_dataset(many).warnings
    assert "7 of the 8 train classes: c1, c2, c3, c4, c5 (+2 more)." in warning


def test_an_epoch_in_which_no_image_loads_stops_the_run(data_copy, tmp_path):
    """Every file damaged (or a decoder that fails on all of them): not "finished" with nothing trained."""
    for path in (data_copy / "train").rglob("*.jpg"):
        path.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    result = cli("train", "--data", data_copy, "--out", out, *TINY, "--epochs", "2")
    assert_clean_error(result, "no image of epoch 1 could be loaded (160 skipped", "trainer verify")
    assert not (out / "checkpoints" / "best.pt").exists() and not (out / "metrics.jsonl").read_text()
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


def test_resume_none_sets_the_previous_run_aside_instead_of_overwriting_it(demo_data, trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    best = (out / "checkpoints" / "best.pt").read_bytes()
    old_metrics = (out / "metrics.jsonl").read_text()
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "1", "--resume", "none")
    assert result.exit_code == 0, result.output
    (previous,) = out.glob("previous-*")
    assert (previous / "checkpoints" / "best.pt").read_bytes() == best
    assert (previous / "metrics.jsonl").read_text() == old_metrics
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1     # the new run's own
    assert f"were moved to {previous}" in (out / "train.log").read_text()


def test_demo_data_never_writes_into_another_dataset(demo_data, tmp_path):
    prepared = Path(shutil.copytree(demo_data, tmp_path / "prepared"))
    meta = json.loads((prepared / "dataset.json").read_text())
    meta["dataset"] = "tiny-imagenet"
    (prepared / "dataset.json").write_text(json.dumps(meta))
    before = sorted(p.relative_to(prepared) for p in prepared.rglob("*"))
    assert_clean_error(cli("demo-data", "--dest", prepared), "is not empty and is not an earlier demo set")
    assert sorted(p.relative_to(prepared) for p in prepared.rglob("*")) == before
    # An earlier demo set is replaced whole: no classes of the old one left mixed in.
    again = Path(shutil.copytree(demo_data, tmp_path / "demo-again"))
    result = cli("demo-data", "--dest", again, "--classes", "3", "--per-class", "5")
    assert result.exit_code == 0, result.output
    assert len(list((again / "train").iterdir())) == 3 and len(list((again / "val").iterdir())) == 3


def test_predict_top_and_lr_find_ranges_are_checked(demo_data, trained_run, tmp_path):
    image = next((demo_data / "val").rglob("*.jpg"))
    best = trained_run / "checkpoints" / "best.pt"
    for top in ("0", "-1"):
        result = cli("predict", "--checkpoint", best, "--top", top, image)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    result = cli("lr-find", "--data", demo_data, "--out", tmp_path / "lrf", "--arch", "resnet_small", "--start-lr", "1",
                 "--end-lr", "0.1")
    assert_clean_error(result, "0 < --start-lr < --end-lr")
    result = cli("lr-find", "--data", demo_data, "--out", tmp_path / "lrf", "--steps", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "lrf").exists()


def test_val_missing_a_class_is_warned_in_the_log(data_copy, tmp_path):
    shutil.rmtree(sorted((data_copy / "val").iterdir())[1])
    out = tmp_path / "out"
    result = cli("train", "--data", data_copy, "--out", out, *TINY, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "val/ has no folder for 1 of the 4 train classes" in (out / "train.log").read_text()


def test_val_missing_a_class_is_warned_by_evaluate_too(data_copy, trained_run):
    gone = sorted((data_copy / "val").iterdir())[1]
    shutil.rmtree(gone)
    result = cli("evaluate", "--data", data_copy, "--checkpoint", trained_run / "checkpoints" / "best.pt", "--workers", "0")
    assert result.exit_code == 0, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"warning: val/ has no folder for 1 of the 4 train classes: {gone.name}."), line
    report = json.loads(result.stdout)   # the JSON on stdout stays clean
    assert report["images"] == 36 and report["per_class"][gone.name]["images"] == 0
