"""The arguments a job passes to `trainer train` (after `--`), checked before anything is paid for.

A typo there used to surface only once the instance was up, the dataset synced and the image
built: the trainer exited with a usage error, and Docker's restart policy retried it. orch never
imports the trainer (it installs without torch), so it checks against two of the trainer's files:
`trainer/train-flags.json` (the options of `trainer train`, written by `python -m trainer.cli_flags`
and kept in step with the command by tests/trainer/test_cli_flags.py) and the recipe names in
`trainer/recipes/`. Both describe the trainer of this checkout, which is what orch builds into the
image; with `--image`, the image's own trainer may differ, so only the recipe check runs there.

    check_trainer_args(["--recipe", "t4-rn50", "--epochs", "24"])        # fine
    check_trainer_args(["--epoch", "24"])   # ConfigError: unknown trainer option --epoch (did you mean --epochs?)

It also works out the trainer's own budget (`trainer train --max-hours`: save, stop and exit 0 before
this many hours of training, every resume of the run counted together). On an instance, the hard
cap of `orch launch --max-hours/--max-dollars` is enforced by infra/bootstrap.sh's watcher, which
`docker stop`s the job at the cap: `budget_under_cap` gives the trainer what is left of it, less a
margin, so that it saves and exits on its own first (and its projection warns when the run won't fit).

    budget_under_cap(cap_s=3 * 3600, elapsed_s=120, trained_s=0, user_hours=None).hours   # 2.79
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from orchestrator import assets
from orchestrator.config import ConfigError

# Options orch itself gives `trainer train` (job.spec.trainer_command): a second one would silently win.
SET_BY_ORCH = {
    "--data": "orch mounts the dataset given to `orch launch --data` there",
    "--out": "orch keeps the run folder in the job's outputs",
    "--resume": "orch resumes from the job's last checkpoint by itself (orch launch --resume after a reclaim)",
    # `orch launch --nodes N` gives each node these; by hand they would wait for machines nobody started.
    "--nnodes": "orch gives it to each instance of `orch launch --nodes N` (one instance's GPUs: --nproc)",
    "--node-rank": "orch gives each instance of `orch launch --nodes N` its own",
    "--master": "orch gives every instance of `orch launch --nodes N` node 0's address",
}


# What the job's container sees (job.spec.trainer_command): the dataset and the run folder.
CONTAINER_DIRS = ("/data/", "/outputs/")


@dataclass(frozen=True)
class TrainerOption:
    name: str            # --epochs, --no-compile
    kind: str            # int | float | text | flag
    repeatable: bool = False


@dataclass(frozen=True)
class TrainerCommand:
    options: dict[str, TrainerOption]
    settings: tuple[str, ...] = ()   # the keys of --set KEY=VALUE (empty: not checked)


def train_flags(path: Path | None = None) -> TrainerCommand | None:
    """What `trainer train` takes, or None when this install has no flags file."""
    path = path or assets.path("trainer/train-flags.json")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    options = {name: TrainerOption(name, spec["kind"], bool(spec.get("repeatable")))
               for name, spec in raw["flags"].items()}
    return TrainerCommand(options, tuple(raw.get("settings", ())))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in (assets.root() / "trainer" / "recipes").glob("*.toml"))


def check_trainer_args(args: Sequence[str], check_options: bool = True, data: str | None = None) -> None:
    """Raise ConfigError naming the first argument `trainer train` would refuse (or orch overrides).

    Recipe names are always checked (a .toml path is the container's, so it is not); option names,
    value types and `--set` keys only with `check_options` (False for a user's own `--image`).
    `data`: the job's --data, given where the trainer runs in a container that sees only it (at
    /data) and its outputs: a weights file named by another path could not be read there.
    """
    args = list(args)
    recipes = recipe_names()
    if check_options:
        command = train_flags()
        if command is not None:
            _check_options(args, command.options)
            _check_settings(_values_of("--set", args), command.settings)
    for name in _values_of("--recipe", args):
        if not name.endswith(".toml") and recipes and name not in recipes:
            raise ConfigError(f"unknown recipe {name!r} after `--`{_did_you_mean(name, recipes)}. "
                              f"Valid recipes: {', '.join(recipes)}.")
    if data is not None:
        check_container_paths(args, data)


def check_container_paths(args: Sequence[str], data: str) -> None:
    """Refuse a weights file the job's container can't read: it sees only the dataset (as /data) and
    its outputs, so a path of this machine would fail in there (on an instance, after it is paid for)."""
    args = list(args)
    sets = [v.split("=", 1)[1] for v in _values_of("--set", args) if v.startswith("init_weights=")]
    for value in _values_of("--init-weights", args) + sets:
        if value != "imagenet" and not value.startswith(CONTAINER_DIRS):
            raise ConfigError(
                f"--init-weights {value} after `--`: the trainer reads it inside the job's container, which "
                f"sees your --data folder as /data and nothing else of this machine. Copy the file into "
                f"{data} (it is synced with it) and pass --init-weights /data/{Path(value).name}; or "
                f"`--init-weights imagenet` for torchvision's ImageNet weights.")


def _check_options(args: list[str], options: Mapping[str, TrainerOption]) -> None:
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected trainer argument {token!r} after `--`: `trainer train` takes only options "
                              "(--name VALUE), e.g. -- --recipe t4-rn18-fast --epochs 16")
        name, has_value, value = token.partition("=")
        if name in SET_BY_ORCH:
            raise ConfigError(f"{name} after `--`: {SET_BY_ORCH[name]}; leave it out.")
        option = options.get(name)
        if option is None:
            raise ConfigError(f"unknown trainer option {name} after `--`{_did_you_mean(name, list(options))}. "
                              "`trainer train --help` lists them (any setting also works as --set KEY=VALUE).")
        if option.kind == "flag":
            if has_value:
                raise ConfigError(f"trainer option {name} is a switch and takes no value (got {token!r})")
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and option.kind == "text"):
                raise ConfigError(f"trainer option {name} needs a value, e.g. {name} {_example(option)}")
            value = args[i + 1]
            i += 1
        _check_value(option, value)
        i += 1


def _check_settings(pairs: list[str], settings: Sequence[str]) -> None:
    for pair in pairs:
        key, has_value, _ = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not has_value:
            raise ConfigError(f"--set expects KEY=VALUE after `--`, got {pair!r} (e.g. --set crop_scale=0.35,1)")
        if settings and key not in settings:
            raise ConfigError(f"unknown trainer setting {key!r} in --set {pair}{_did_you_mean(key, list(settings))}. "
                              "trainer/config.py lists them, each with a comment.")


def _check_value(option: TrainerOption, value: str) -> None:
    kind = {"int": int, "float": float}.get(option.kind)
    if kind is None:
        return
    try:
        kind(value)
    except ValueError:
        raise ConfigError(f"trainer option {option.name} takes {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r} (e.g. {option.name} {_example(option)})") from None


def _example(option: TrainerOption) -> str:
    return {"int": "16", "float": "0.5"}.get(option.kind, "VALUE")


def _values_of(name: str, args: list[str]) -> list[str]:
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]
    return values + [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --- the trainer's --max-hours under the instance's hard cap ---------------------------------------------

# How long before the watcher's `docker stop` the trainer is told to be done. Its own clock starts after the
# container, Python and the dataset index are up, and it keeps back only the time of saves it has already timed
# (none before its first); a run restarted after a crash resumes from a checkpoint that may be minutes old. Ten
# minutes covers those with room to spare and costs at most 10 min of a cap that is hours long; a short cap keeps
# three quarters of itself instead (a quarter as margin), so a 20-minute trial still trains for 15.
SAVE_MARGIN_S = 600.0
SAVE_MARGIN_SHARE = 0.25
MIN_TRAINING_S = 60.0  # less than this left once the margin is kept: not worth starting the trainer


class CapSpent(RuntimeError):
    """The instance's hard cap leaves the trainer too little time to start; nothing was started."""


@dataclass(frozen=True)
class Budget:
    hours: float  # what the trainer gets as --max-hours
    note: str  # one line for the launch output: the value and where it comes from


def save_margin_s(cap_s: float) -> float:
    """What is kept back from a hard cap of `cap_s` seconds for the trainer to save and exit."""
    return min(SAVE_MARGIN_S, SAVE_MARGIN_SHARE * cap_s)


def training_left_s(cap_s: float, elapsed_s: float) -> float:
    """Seconds the trainer may still train under a cap `elapsed_s` into it; CapSpent when too few."""
    margin = save_margin_s(cap_s)
    usable = cap_s - elapsed_s - margin
    if usable < MIN_TRAINING_S:
        left = max(0.0, cap_s - elapsed_s)
        raise CapSpent(f"the instance's hard cap of {_hours(cap_s / 3600)} h (--max-hours/--max-dollars) has "
                       f"{_minutes(left)} left, and the trainer needs {_minutes(margin)} of it to save and stop: "
                       "nothing was started")
    return usable


def budget_under_cap(cap_s: float, elapsed_s: float, trained_s: float, user_hours: float | None) -> Budget:
    """The trainer's --max-hours on an instance whose hard cap of `cap_s` seconds is `elapsed_s` in.

    `trained_s`: what the run it resumes has trained already (its budget counts every resume together);
    `user_hours`: the user's own --max-hours (`max_hours_of`), kept when it is the smaller.
    """
    usable = training_left_s(cap_s, elapsed_s)
    ours = math.floor((trained_s + usable) / 36) / 100  # in 0.01 h, rounded down: never past the cap
    why = (f"{_hours((cap_s - elapsed_s) / 3600)} h left of the {_hours(cap_s / 3600)} h cap, "
           f"less {_minutes(save_margin_s(cap_s))} to save")
    if trained_s > 0:
        why = f"{_hours(trained_s / 3600)} h already trained (its budget counts every resume) + {why}"
    return _smaller(user_hours, ours, why)


def budget_from_flag(hours: float, user_hours: float | None) -> Budget:
    """The trainer's --max-hours from orch's own --max-hours, as it is (the local target: no watcher there)."""
    return _smaller(user_hours, hours, "orch's --max-hours")


def _smaller(user_hours: float | None, ours: float, why: str) -> Budget:
    if user_hours is not None and user_hours <= ours:
        return Budget(user_hours, f"trainer: --max-hours {user_hours:g} (yours; the cap allows {ours:g}: {why})")
    note = f"trainer: --max-hours {ours:g} ({why})"
    if user_hours is not None:
        note += f"; your --max-hours {user_hours:g} is larger, so it is not used"
    return Budget(ours, note)


def max_hours_of(args: Sequence[str]) -> float | None:
    """The budget `trainer train` takes from `args` (None: none, or 0, which is off): the last --max-hours,
    unless a --set max_hours=H, which the trainer applies after the flags."""
    flag = setting = None
    for name, value, _ in _budget_options(list(args)):
        if name == "--max-hours":
            flag = value
        else:
            setting = value
    value = setting if setting is not None else flag
    try:
        hours = float(value) if value is not None else 0.0
    except ValueError:
        return None
    return hours if hours > 0 else None


def with_max_hours(args: Sequence[str], hours: float) -> tuple[str, ...]:
    """`args` without their own budget (--max-hours, --set max_hours=...) and with `--max-hours HOURS` last."""
    args = list(args)
    drop = {i for _, _, where in _budget_options(args) for i in where}
    return tuple(a for i, a in enumerate(args) if i not in drop) + ("--max-hours", f"{hours:g}")


def _budget_options(args: list[str]) -> list[tuple[str, str, tuple[int, ...]]]:
    """Each budget in `args`: (--max-hours or --set, its value, the indexes of its tokens)."""
    found = []
    for i, token in enumerate(args):
        name, has_value, value = token.partition("=")
        if name not in ("--max-hours", "--set"):
            continue
        where: tuple[int, ...] = (i,)
        if not has_value:
            if i + 1 >= len(args):
                continue
            value, where = args[i + 1], (i, i + 1)
        if name == "--set":
            key, is_pair, value = value.partition("=")
            if not is_pair or key.strip().replace("-", "_") != "max_hours":
                continue
        found.append((name, value.strip(), where))
    return found


def _hours(hours: float) -> str:
    return f"{hours:.2f}".rstrip("0").rstrip(".")


def _minutes(seconds: float) -> str:
    return f"{max(0.0, seconds) / 60:.1f}".rstrip("0").rstrip(".") + " min"
