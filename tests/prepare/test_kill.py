"""A real kill (SIGKILL, process group) in the middle of a parallel --resize-short run, then a rerun."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

from PIL import Image

from typer.testing import CliRunner

from tests.prepare.helpers import dataset_json, trainer_app, tree_files
from tests.prepare.miniature import WNIDS, _tar_bytes, jpeg, make_imagenet

RUN = ("from tests.prepare.helpers import trainer_app; import sys; "
       "sys.argv[0] = 'trainer'; trainer_app()()")


def test_killed_run_finishes_on_rerun_without_half_files(tmp_path):
    truth = make_imagenet(tmp_path / "src", "archives")
    # A train tar big enough that the run is still going when the first class completes.
    train = {}
    class_tars = {}
    for c, wnid in enumerate(WNIDS):
        members = {f"{wnid}_{k}.JPEG": jpeg(10_000 + 100 * c + k, (320, 240)) for k in range(40)}
        train.update({("train", wnid, n): d for n, d in members.items()})
        class_tars[f"{wnid}.tar"] = _tar_bytes(members)
    (tmp_path / "src" / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(class_tars))
    expected = set(train) | {k for k in truth.images if k[0] == "val"}

    args = [sys.executable, "-c", RUN, "prepare", "imagenet", "--source", str(tmp_path / "src"),
            "--dest", str(tmp_path / "out"), "--resize-short", "48", "--workers", "2"]
    proc = subprocess.Popen(args, cwd=os.getcwd(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = tmp_path / "out" / ".prepare" / "done" / "train"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and any(p.suffix != ".tmp" for p in done_dir.iterdir()):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)   # the run and its pool workers, as a lost SSH session would
    proc.wait()
    complete = sorted(p.name for p in done_dir.iterdir() if p.suffix != ".tmp")
    assert 1 <= len(complete) < len(WNIDS), "the kill should land mid-way; make the miniature bigger"
    stamps = {p: p.stat().st_mtime_ns for c in complete for p in (tmp_path / "out" / "train" / c).iterdir()}

    rerun = subprocess.run(args, cwd=os.getcwd(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(complete)} class folders were already complete" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    got = tree_files(tmp_path / "out")
    assert set(got) == expected, "no half-written or missing files"
    for key, data in got.items():
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            want = (40, 30) if key[0] == "val" else (64, 48)   # val images are small: kept as they are
            assert img.size == want, key
    assert sum(dataset_json(tmp_path / "out")["counts"]["train"].values()) == 240
    check = CliRunner().invoke(trainer_app(), ["verify", "--data", str(tmp_path / "out"), "--workers", "2"])
    assert check.exit_code == 0, check.output   # 254 files: decoded by the process pool
