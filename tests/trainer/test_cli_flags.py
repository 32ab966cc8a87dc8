"""trainer/train-flags.json is what `orch launch` checks trainer arguments against (orch never
imports the trainer): it must list exactly the options `trainer train` takes, with their kinds."""
from __future__ import annotations

import json
from pathlib import Path

from trainer.cli_flags import train_flags

FILE = Path(__file__).resolve().parents[2] / "trainer" / "train-flags.json"


def test_the_flags_file_matches_trainer_train():
    assert json.loads(FILE.read_text()) == train_flags(), (
        "trainer/train-flags.json is out of date: python -m trainer.cli_flags > trainer/train-flags.json")


def test_the_flags_file_knows_each_kind_of_option():
    flags = train_flags()["flags"]
    assert flags["--epochs"] == {"kind": "int"} and flags["--lr"] == {"kind": "float"}
    assert flags["--recipe"] == {"kind": "text"} and flags["--set"] == {"kind": "text", "repeatable": True}
    assert flags["--compile"] == flags["--no-compile"] == flags["--watch-spot"] == {"kind": "flag"}
    assert "--help" not in flags


def test_the_flags_file_lists_the_settings_set_takes():
    from trainer.config import FIELDS

    settings = train_flags()["settings"]
    assert "crop_scale" in settings and "label_smoothing" in settings
    assert settings == sorted(FIELDS)
