"""Bad input on every command: a clear error, a non-zero exit, no traceback, no state change.

The `orch` cases run with a job already in the registry (a real launch against moto), so "no state
change" means the file that matters is byte-for-byte what it was. Property-based where it fits:
hypothesis generates the typos, the garbage and the near-misses; few examples, no deadline.
"""
from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tests.reliability.conftest import TINY, no_traceback, trainer

CIDR = "203.0.113.7/32"
FEW = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
VALID_JOB = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def state_file() -> Path:
    return Path(os.environ["ORCH_HOME"]) / "state.json"


def snapshot() -> bytes | None:
    path = state_file()
    return path.read_bytes() if path.exists() else None


def assert_clean_failure(result, *phrases: str) -> None:
    """Non-zero, no traceback, a short message that names the problem."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert no_traceback(result.output), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 8, result.output
    for phrase in phrases:
        assert phrase.lower() in result.output.lower(), (phrase, result.output)


@pytest.fixture
def registry(aws, orch, job_calls):
    """A registry holding one real (moto) job, `keep`; returns its bytes."""
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "keep", "--ssh-cidr", CIDR)
    assert r.exit_code == 0, r.output
    return snapshot()


# --- orch launch ---------------------------------------------------------------------------------

REAL_TYPES = ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "p3.2xlarge", "g6.4xlarge"]


@st.composite
def typo_of_a_real_type(draw):
    name = draw(st.sampled_from(REAL_TYPES))
    i = draw(st.integers(0, len(name) - 1))
    op = draw(st.sampled_from(["drop", "double", "swap", "replace"]))
    if op == "drop":
        return name[:i] + name[i + 1:]
    if op == "double":
        return name[:i] + name[i] + name[i:]
    if op == "swap" and i + 1 < len(name):
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    return name[:i] + draw(st.sampled_from("xyzq")) + name[i + 1:]


@pytest.fixture
def valid_types(aws):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    names = set()
    for page in ec2.get_paginator("describe_instance_types").paginate():
        names.update(t["InstanceType"] for t in page["InstanceTypes"])
    return names


@FEW
@given(bad=typo_of_a_real_type())
def test_unknown_instance_type_suggests_the_closest_real_names(registry, orch, aws, valid_types, bad):
    assume(bad not in valid_types and not bad.startswith("-"))
    r = orch("launch", "--instance", bad, "--name", "typo", "--ssh-cidr", CIDR)
    assert_clean_failure(r, "does not exist", bad)
    suggested = [t for t in re.findall(r"[a-z0-9-]+\.[a-z0-9-]+", r.output) if t in valid_types]
    assert suggested, f"no valid instance type suggested for {bad!r}: {r.output}"
    assert all(difflib.SequenceMatcher(None, bad, t).ratio() >= 0.6 for t in suggested), r.output
    assert snapshot() == registry
    assert [c for c in aws.run_calls if c.get("InstanceType") == bad] == []


@FEW
@given(region=st.one_of(st.text(max_size=20), st.sampled_from(["US-EAST-1", "us_east_1", "useast1", "us-east-",
                                                               "eu-west", "1-us-east"])))
def test_malformed_region_is_refused(registry, orch, region):
    assume(not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region) and not region.startswith("-") and region)
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "keep", "--ssh-cidr", CIDR, "--region", region)
    assert_clean_failure(r, "region")
    assert snapshot() == registry


@pytest.mark.parametrize("region", ["us-east-7", "mars-north-1", "eu-westt-1"])
def test_well_formed_but_unknown_region_is_refused_with_the_closest_names(registry, orch, aws, region):
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "elsewhere", "--ssh-cidr", CIDR, "--region", region)
    assert_clean_failure(r, region)
    known = boto3.session.Session().get_available_regions("ec2")  # botocore's own list: no network needed
    assert any(name in r.output for name in known), f"no valid region suggested: {r.output}"
    assert snapshot() == registry
    assert not any("elsewhere" in str(c) for c in aws.run_calls)


@FEW
@given(volume=st.one_of(st.integers(max_value=7), st.integers(min_value=16385),
                        st.sampled_from(["abc", "1.5", "nan", "", "1e3", "100GB"])))
def test_bad_volume_size_is_refused(registry, orch, volume):
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "keep", "--ssh-cidr", CIDR, "--volume-gb", volume)
    assert_clean_failure(r, "volume")
    assert snapshot() == registry


@FEW
@given(name=st.one_of(st.text(min_size=1, max_size=50),
                      st.sampled_from(["Keep", "keep job", "k" * 41, "../keep", "keep;rm", "-", "kéep"])))
def test_bad_job_name_is_refused(registry, orch, name):
    assume(not VALID_JOB.fullmatch(name) and not name.startswith("-"))
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", name, "--ssh-cidr", CIDR)
    assert_clean_failure(r, "job name")
    assert snapshot() == registry


# --- config files --------------------------------------------------------------------------------

toml_garbage = st.one_of(
    st.sampled_from(["region = [unclosed\n", "region = \"us-east-1\"\nregion = \"x\"\n", "= 3\n",
                     "volume_gb = \"big\"\n", "regoin = \"us-east-1\"\n", "[[[\n", "volume_gb = 1e999\n",
                     "autostop_minutes = -4\n", "ssh_cidr = \"0.0.0.0\"\n", "\x00\x01\x02\n"]),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@FEW
@given(text=toml_garbage, command=st.sampled_from([("list",), ("status", "keep"), ("teardown", "keep", "--yes"),
                                                   ("launch", "--instance", "g4dn.xlarge", "--name", "keep"),
                                                   ("doctor",)]))
def test_malformed_orch_config_file_is_a_clean_error(registry, orch, text, command):
    config = Path(os.environ["ORCH_HOME"]) / "config.toml"
    config.write_text(text, encoding="latin-1")
    before = snapshot()
    try:
        r = orch(*command)
        if r.exit_code == 0:  # the garbage happened to be a valid, harmless config
            return
        assert_clean_failure(r, "config.toml")
        assert snapshot() == before
    finally:
        config.unlink()


def test_unknown_trainer_recipe_is_refused_before_an_instance_is_paid_for(registry, orch, aws, tmp_path):
    data = tmp_path / "data"
    assert trainer("demo-data", "--dest", data, "--classes", "2", "--per-class", "2", "--size", "16").exit_code == 0
    r = orch("launch", "--instance", "g4dn.xlarge", "--name", "norecipe", "--ssh-cidr", CIDR, "--data", data,
             "--", "--recipe", "t4-rn18-fats")
    assert_clean_failure(r, "unknown recipe", "t4-rn18-fast")
    assert snapshot() == registry
    assert all("norecipe" not in str(c) for c in aws.run_calls), "an instance was started for a job that can't run"


# --- jobs that don't exist -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [("status", "ghost"), ("teardown", "ghost", "--yes"), ("logs", "ghost"),
                                     ("fetch-weights", "ghost"), ("ssh", "ghost", "--print")],
                         ids=lambda c: c[0])
def test_unknown_job_is_a_clean_error_on_every_command(registry, orch, command):
    r = orch(*command)
    assert_clean_failure(r, "ghost")
    assert snapshot() == registry


# --- trainer: recipes and data -------------------------------------------------------------------

recipe_garbage = st.one_of(
    st.sampled_from(["epochs = \n", "[train\nepochs = 3\n", "epochs = \"three\"\n", "lr = -1\n",
                     "schedule = \"sawtooth\"\n", "no_such_setting = 1\n", "[train]\nwarmup_epochs = \"x\"\n",
                     "crop_scale = [0.9, 0.1]\n", "depths = \"a,b\"\n"]),
    st.binary(min_size=1, max_size=40).map(lambda b: b.decode("latin-1")),
)


@FEW
@given(text=recipe_garbage)
def test_malformed_recipe_file_is_a_clean_error(tiny_data, tmp_path_factory, text):
    work = tmp_path_factory.mktemp("recipe")
    recipe = work / "broken.toml"
    recipe.write_text(text, encoding="latin-1")
    # Flags that keep a run short if the garbage happens to be a harmless recipe (and set nothing it tests).
    r = trainer("train", "--data", tiny_data, "--out", work / "out", "--recipe", recipe, "--arch", "resnet_small",
                "--width", 8, "--batch-size", 8, "--train-res", 16, "--eval-res", 16, "--device", "cpu",
                "--workers", 0, "--max-hours", 0.0001)
    if r.exit_code == 0:
        return
    assert r.exit_code == 2, r.output
    assert_clean_failure(r)
    assert "recipe" in r.output or "setting" in r.output, r.output
    assert not (work / "out" / "checkpoints").exists() or not any((work / "out" / "checkpoints").iterdir())


@FEW
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20))
def test_unknown_recipe_name_lists_the_real_ones(tiny_data, tmp_path_factory, name):
    from trainer.config import available_recipes

    assume(name not in available_recipes() and not name.startswith("-"))
    work = tmp_path_factory.mktemp("recipe")
    r = trainer("train", "--data", tiny_data, "--out", work / "out", "--recipe", name, "--device", "cpu")
    assert r.exit_code == 2
    assert_clean_failure(r, "unknown recipe", "demo", "trainer recipes")


def _flat(data: Path) -> None:  # images straight in train/, no class folders
    for img in list(data.glob("train/*/*")):
        shutil.move(str(img), data / "train" / f"{img.parent.name}-{img.name}")
    for d in data.glob("train/*/"):
        d.rmdir()


def _no_train(data: Path) -> None:
    shutil.rmtree(data / "train")


def _data_is_a_file(data: Path) -> None:
    shutil.rmtree(data)
    data.write_text("not a folder\n")


def _val_class_not_in_train(data: Path) -> None:
    extra = data / "val" / "zebra"
    extra.mkdir()
    shutil.copy(next(data.glob("val/*/*")), extra / "z.jpg")


def _everything_empty(data: Path) -> None:
    for img in list(data.glob("*/*/*")):
        img.unlink()


@pytest.mark.parametrize("damage, names", [(_flat, "train"), (_no_train, "train"), (_data_is_a_file, "data"),
                                           (_val_class_not_in_train, "zebra"), (_everything_empty, "images")],
                         ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_wrong_data_layout_is_a_clean_error(tiny_data, tmp_path, damage, names):
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    damage(data)
    r = trainer("train", "--data", data, "--out", tmp_path / "out", *TINY, "--epochs", 1)
    assert r.exit_code == 2, r.output
    assert_clean_failure(r, names)
    assert not (tmp_path / "out" / "checkpoints" / "last.pt").exists()


def test_missing_data_path_is_a_clean_error(tmp_path):
    r = trainer("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "out", *TINY)
    assert r.exit_code == 2
    assert_clean_failure(r, "does not exist", str(tmp_path / "nowhere"))
