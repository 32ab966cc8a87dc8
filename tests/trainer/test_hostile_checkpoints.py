"""A checkpoint is data, never code (issue 21): a `.pt` from a compromised machine whose pickle calls
os.system is refused by every command that reads one, with a message naming the file, and nothing
in it runs. Checkpoints that are not whole (a plain state_dict, no config, weights that do not fit
their class list or the run's settings) give a message too, never a traceback, and change nothing."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY, cli
from trainer import checkpoint as ckpt
from trainer.errors import TrainerError, UnsafeFileError
from trainer.init_weights import init_from
from trainer.models import build_model


class RunsCode:
    """What a tampered checkpoint holds: unpickling it unrestricted calls os.system (a harmless `touch`)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tampered_copy(source: Path, dest: Path, marker: Path) -> Path:
    """`source`'s payload with code hidden in its config, saved as trainer saves (so its .sha256 matches:
    whoever could replace the file could replace its digest too)."""
    payload = ckpt.load(source)
    payload["config"] = {**payload["config"], "recipe": RunsCode(marker)}
    ckpt.save(payload, dest)
    return dest


def assert_clean_error(result, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


def test_the_tampered_file_really_runs_code_when_loaded_unrestricted(trained_run, tmp_path):
    """So the refusals below are not vacuous: the old `weights_only=False` would have run it."""
    marker = tmp_path / "ran"
    evil = tampered_copy(trained_run / "checkpoints" / "best.pt", tmp_path / "evil.pt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def _evaluate(evil, data, tmp_path):
    return ["evaluate", "--data", data, "--checkpoint", evil, "--workers", "0", "--device", "cpu"]


def _predict(evil, data, tmp_path):
    return ["predict", "--checkpoint", evil, sorted((data / "val").glob("*/*.jpg"))[0]]


def _export(evil, data, tmp_path):
    return ["export", "--checkpoint", evil, "--out", tmp_path / "model.onnx"]


def _resume_from_path(evil, data, tmp_path):
    return ["train", "--data", data, "--out", tmp_path / "run", *TINY, "--epochs", "3", "--resume", evil]


def _init_weights(evil, data, tmp_path):
    return ["train", "--data", data, "--out", tmp_path / "run", *TINY, "--epochs", "1", "--init-weights", evil]


@pytest.mark.parametrize("command", [_evaluate, _predict, _export, _resume_from_path, _init_weights],
                         ids=lambda f: f.__name__.strip("_"))
def test_every_command_refuses_a_checkpoint_that_runs_code(command, demo_data, trained_run, tmp_path):
    marker = tmp_path / "ran"
    evil = tampered_copy(trained_run / "checkpoints" / "best.pt", tmp_path / "evil.pt", marker)
    result = cli(*command(evil, demo_data, tmp_path))
    assert_clean_error(result, str(evil), "was refused: reading it would call", "nothing in it ran")
    assert "weights_only" not in result.output   # not torch's advice to load it unrestricted
    assert not marker.exists()
    assert not (tmp_path / "model.onnx").exists()
    assert not list(tmp_path.glob("run/**/*.pt"))   # nothing trained or saved


def test_resume_refuses_a_tampered_last_pt_and_changes_nothing(demo_data, trained_run, tmp_path):
    """Unlike a torn last.pt (moved aside, resumed from last.prev.pt), a tampered one stops the run:
    the folder was written by someone else, so someone should look before anything continues."""
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    marker = tmp_path / "ran"
    last = tampered_copy(out / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt", marker)
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "3")
    assert_clean_error(result, str(last), "was refused", "Nothing in", "delete last.pt", "last.prev.pt")
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


def test_a_tampered_weights_file_in_torchs_cache_is_refused(tmp_path, monkeypatch):
    """`--init-weights imagenet` reads torch's hub cache, which torch.hub itself loads unrestricted."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "x": RunsCode(marker)}, cached)
    with pytest.raises(UnsafeFileError, match="was refused") as err:
        init_from(build_model("resnet18", 3, stem="small"), "imagenet", "resnet18")
    assert str(cached) in err.value.message
    assert not marker.exists()


def test_checkpoints_written_by_training_hold_plain_data_only(trained_run):
    """What `weights_only=True` accepts: tensors, numbers, strings, lists, tuples, dicts (the RNG states,
    optimizer and scaler state and the config included), so loading them needs no unpickling of code."""
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))

    for name in ("last.pt", "best.pt"):
        payload = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert plain(payload), name
        assert {"model", "optimizer", "scaler", "rng", "config", "classes"} <= set(payload)


@pytest.mark.parametrize("damage, phrases", [
    (lambda p: p["model"], ["holds only weights (a state_dict)", "--init-weights"]),
    (lambda p: {k: v for k, v in p.items() if k != "config"}, ["has no 'config'", "--init-weights"]),
    (lambda p: {k: v for k, v in p.items() if k != "classes"}, ["has no 'classes' entry"]),
    (lambda p: [p["model"]], ["holds a list, not a dict"]),
], ids=["state_dict", "no_config", "no_classes", "not_a_dict"])
def test_a_checkpoint_without_its_run_is_a_message(damage, phrases, demo_data, trained_run, tmp_path):
    path = tmp_path / "partial.pt"
    torch.save(damage(ckpt.load(trained_run / "checkpoints" / "best.pt")), path)
    for command in (_evaluate, _predict, _export):
        assert_clean_error(cli(*command(path, demo_data, tmp_path)), str(path), *phrases)


def test_resuming_a_checkpoint_without_its_config_is_a_message_and_keeps_it(demo_data, trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    payload = ckpt.load(out / "checkpoints" / "last.pt")
    del payload["config"]
    ckpt.save(payload, out / "checkpoints" / "last.pt")
    before = (out / "checkpoints" / "last.pt").read_bytes()
    result = cli("train", "--data", demo_data, "--out", out, *TINY, "--epochs", "3")
    assert_clean_error(result, "has no 'config', which resuming needs")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_evaluating_on_another_class_count_names_the_classes_and_what_to_do(trained_run, tmp_path):
    other = tmp_path / "other"
    assert cli("demo-data", "--dest", other, "--classes", "5", "--per-class", "4", "--size", "16").exit_code == 0
    result = cli(*_evaluate(trained_run / "checkpoints" / "best.pt", other, tmp_path))
    extra = sorted(p.name for p in (other / "train").iterdir())[-1]
    assert_clean_error(result, "trained on 4 classes but", "has 5 class folders", extra,
                       "evaluate it on the dataset it was trained on")


def test_a_class_list_that_no_longer_fits_the_weights_is_a_message(demo_data, trained_run, tmp_path):
    path = tmp_path / "edited.pt"
    payload = ckpt.load(trained_run / "checkpoints" / "best.pt")
    payload["classes"] = payload["classes"][:3]   # the classifier still has 4 outputs
    ckpt.save(payload, path)
    for command in (_predict, _export):
        assert_clean_error(cli(*command(path, demo_data, tmp_path)), str(path), "weights do not fit",
                           "size mismatch for")


def test_resuming_with_another_width_names_the_setting_it_was_trained_with(demo_data, trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    args = [a if a != "8" else "16" for a in TINY]   # --width 8 -> 16
    result = cli("train", "--data", demo_data, "--out", out, *args, "--epochs", "3")
    assert_clean_error(result, "weights do not fit", "--set width=8")
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


def test_a_torn_file_is_still_unreadable_not_refused(tmp_path):
    """Only a pickle that names code is called tampered: a torn file keeps its old handling (resuming
    moves it aside and continues from last.prev.pt)."""
    for content in (b"P", b"torn", b"\x80\x02}q\x00"):
        path = tmp_path / "torn.pt"
        path.write_bytes(content)
        with pytest.raises(TrainerError) as err:
            ckpt.load(path)
        assert not isinstance(err.value, UnsafeFileError) and "cannot be read" in err.value.message
