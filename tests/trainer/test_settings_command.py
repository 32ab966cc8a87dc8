"""`trainer settings`: every setting `trainer train` would use, resolved, with where it comes from
and what it means, so a user can see what a recipe trains before paying for an instance."""
from __future__ import annotations

from typer.testing import CliRunner

from trainer.cli import app
from trainer.config import FIELDS, resolve, setting_help, to_dict


def settings(*args: str):
    return CliRunner().invoke(app, ["settings", *args], env={"COLUMNS": "300"})


def rows(output: str) -> dict[str, tuple[str, str, str]]:
    """{setting: (value, from, meaning)} of the printed table (one line per row at 300 columns)."""
    out = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 4 and cells[0] in FIELDS:
            out[cells[0]] = tuple(cells[1:])
    return out


def test_every_setting_has_a_meaning():
    meaning = setting_help()
    assert set(meaning) == set(FIELDS)
    assert all(len(text) > 8 for text in meaning.values()), {k: v for k, v in meaning.items() if len(v) <= 8}
    # a comment that goes on below its line is kept whole
    assert meaning["cuda_graphs"].endswith("less host time launching kernels")


def test_a_recipe_and_a_set_resolve_as_training_resolves_them():
    r = settings("--recipe", "t4-rn18-fast", "--set", "epochs=20", "--set", "crop_scale=0.35,1")
    assert r.exit_code == 0, r.output
    got = rows(r.output)
    assert set(got) == set(FIELDS)
    expected = to_dict(resolve("t4-rn18-fast", {"epochs": "20", "crop_scale": "0.35,1"}))
    for name, value in expected.items():
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        assert got[name][0] == shown, name
    assert got["epochs"][:2] == ("20", "--set") and got["crop_scale"][:2] == ("0.35,1.0", "--set")
    assert got["arch"][:2] == ("resnet18", "recipe") and got["width"][1] == "default"
    assert got["train_res_start"][2] == setting_help()["train_res_start"]


def test_no_recipe_shows_the_defaults():
    r = settings()
    assert r.exit_code == 0, r.output
    assert {source for _, source, _ in rows(r.output).values()} == {"default"}
    assert "no recipe: the defaults" in r.output


def test_a_bad_setting_is_refused_as_training_refuses_it():
    r = settings("--set", "crop_scale=2")
    assert r.exit_code == 2 and "crop_scale must be two numbers" in r.output and "┃" not in r.output
    r = settings("--recipe", "t4-rn18-fats")
    assert r.exit_code == 2 and "unknown recipe" in r.output
