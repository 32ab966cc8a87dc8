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
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from orchestrator.config import ConfigError, repo_root

# Options orch itself gives `trainer train` (job.trainer_command): a second one would silently win.
SET_BY_ORCH = {
    "--data": "orch mounts the dataset given to `orch launch --data` there",
    "--out": "orch keeps the run folder in the job's outputs",
    "--resume": "orch resumes from the job's last checkpoint by itself (orch launch --resume after a reclaim)",
}


@dataclass(frozen=True)
class TrainerOption:
    name: str            # --epochs, --no-compile
    kind: str            # int | float | text | flag
    repeatable: bool = False


@dataclass(frozen=True)
class TrainerCommand:
    options: dict[str, TrainerOption]
    settings: tuple[str, ...] = ()   # the keys of --set KEY=VALUE (empty: not checked)


def trainer_command(path: Path | None = None) -> TrainerCommand | None:
    """What `trainer train` takes, or None when this install has no flags file."""
    path = path or repo_root() / "trainer" / "train-flags.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    options = {name: TrainerOption(name, spec["kind"], bool(spec.get("repeatable")))
               for name, spec in raw["flags"].items()}
    return TrainerCommand(options, tuple(raw.get("settings", ())))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in (repo_root() / "trainer" / "recipes").glob("*.toml"))


def check_trainer_args(args: Sequence[str], check_options: bool = True) -> None:
    """Raise ConfigError naming the first argument `trainer train` would refuse (or orch overrides).

    Recipe names are always checked (a .toml path is the container's, so it is not); option names,
    value types and `--set` keys only with `check_options` (False for a user's own `--image`).
    """
    args = list(args)
    recipes = recipe_names()
    if check_options:
        command = trainer_command()
        if command is not None:
            _check_options(args, command.options)
            _check_settings(_values_of("--set", args), command.settings)
    for name in _values_of("--recipe", args):
        if not name.endswith(".toml") and recipes and name not in recipes:
            raise ConfigError(f"unknown recipe {name!r} after `--`{_did_you_mean(name, recipes)}. "
                              f"Valid recipes: {', '.join(recipes)}.")


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
