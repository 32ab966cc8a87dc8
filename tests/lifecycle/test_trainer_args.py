"""orch checks the arguments after `--` against the trainer's options file before anything is paid
for: each mistake is a ConfigError that names it; everything `trainer train` takes passes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.config import ConfigError
from orchestrator.trainer_args import check_trainer_args, recipe_names, train_flags

GOOD = [
    ["--recipe", "t4-rn18-fast"],
    ["--recipe", "demo", "--device", "cpu", "--workers", "0", "--width", "8", "--batch-size", "8"],
    ["--recipe=t4-rn50", "--epochs=24", "--lr=0.5", "--no-channels-last", "--compile"],
    ["--set", "crop_scale=0.35,1", "--set", "depths=1,1", "--max-hours", "2.5", "--target-top1", "60"],
    ["--set=label-smoothing=0.1", "--set", "eval_every=2"],                  # the trainer reads - as _
    ["--lr", "-0.1", "--warmup-epochs", "1e-1", "--recipe", "/data/my.toml"],    # the number is the trainer's to refuse
    [],
]


@pytest.mark.parametrize("args", GOOD, ids=lambda a: " ".join(a) or "none")
def test_what_trainer_train_takes_passes(args):
    check_trainer_args(args)


@pytest.mark.parametrize("args,message", [
    (["--epoch", "3"], "unknown trainer option --epoch after `--` (did you mean --epochs?)"),
    (["--recipie", "demo"], "did you mean --recipe?"),
    (["--epochs", "ten"], "--epochs takes an integer, got 'ten'"),
    (["--lr", "fast"], "--lr takes a number, got 'fast'"),
    (["--epochs"], "--epochs needs a value"),
    (["--recipe", "--epochs", "3"], "--recipe needs a value"),
    (["--compile=yes"], "--compile is a switch and takes no value"),
    (["--data", "/mnt/imagenet"], "--data after `--`: orch mounts the dataset"),
    (["--out=/tmp/run"], "--out after `--`"),
    (["--resume", "none"], "--resume after `--`"),
    (["--nnodes", "2", "--master", "10.0.0.5:29500"], "--nnodes after `--`: orch gives it to each instance of `orch launch --nodes N`"),
    (["resnet50"], "unexpected trainer argument 'resnet50'"),
    (["--epochs", "3", "-e"], "unexpected trainer argument '-e'"),
    (["--recipe", "t4-rn18-fats"], "unknown recipe 't4-rn18-fats' after `--` (did you mean t4-rn18-fast?)"),
    (["--set", "crop_scal=0.35,1"], "unknown trainer setting 'crop_scal' in --set crop_scal=0.35,1 (did you mean crop_scale?)"),
    (["--set", "epochs"], "--set expects KEY=VALUE"),
])
def test_each_mistake_is_named(args, message):
    with pytest.raises(ConfigError) as err:
        check_trainer_args(args)
    assert message in str(err.value)


def test_with_a_users_own_image_only_recipe_names_are_checked():
    """The image's trainer may take other options than this checkout's."""
    check_trainer_args(["--option-of-my-fork", "1", "--set", "my_setting=2"], check_options=False)
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        check_trainer_args(["--option-of-my-fork", "--recipe", "nope"], check_options=False)


def test_without_a_flags_file_option_names_are_not_checked(tmp_path):
    assert train_flags(tmp_path / "missing.json") is None
    command = train_flags()
    assert command is not None and command.options["--epochs"].kind == "int" and command.options["--set"].repeatable
    assert "crop_scale" in command.settings and "label_smoothing" in command.settings
    assert {"demo", "t4-rn18-fast", "t4-rn50"} <= set(recipe_names())


def test_launch_with_a_trainer_typo_stops_before_anything_starts(orch, job_calls):
    r = orch("launch", "--target", "local", "--name", "typo", "--data", "demo", "--no-gpus", "--",
             "--recipe", "demo", "--epoch", "1")
    assert r.exit_code == 2, r.output
    assert "unknown trainer option --epoch" in r.output and "--epochs" in r.output and "Traceback" not in r.output
    assert job_calls.started == []
    assert not (Path(os.environ["ORCH_HOME"]) / "state.json").exists()
    # The same job spelled right starts.
    r = orch("launch", "--target", "local", "--name", "typo", "--data", "demo", "--no-gpus", "--",
             "--recipe", "demo", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert job_calls.started[0][1].trainer_args == ("--recipe", "demo", "--epochs", "1")
    assert json.loads((Path(os.environ["ORCH_HOME"]) / "state.json").read_text())["jobs"]["typo"]


@pytest.mark.parametrize("args", [
    ["--init-weights", "imagenet"],
    ["--init-weights", "/data/resnet18.pth"],
    ["--set", "init_weights=/outputs/previous/best.pt"],
])
def test_init_weights_the_instances_container_can_read_pass(args):
    check_trainer_args(args, data="~/data/cifar100")


@pytest.mark.parametrize("args", [
    ["--init-weights", "/home/me/weights/resnet18.pth"],
    ["--init-weights=resnet18.pth"],
    ["--set", "init_weights=~/resnet18.pth"],
])
def test_init_weights_on_this_machine_is_refused_for_an_instance_with_the_path_to_use(args):
    """The container sees only the dataset (/data) and its outputs: a laptop path would fail on the
    instance, after it is paid for."""
    with pytest.raises(ConfigError) as err:
        check_trainer_args(args, data="~/data/cifar100")
    assert "Copy the file into ~/data/cifar100" in str(err.value)
    assert "--init-weights /data/resnet18.pth" in str(err.value)
    check_trainer_args(args)   # where the trainer reads this machine's files (a local process), it is its own
