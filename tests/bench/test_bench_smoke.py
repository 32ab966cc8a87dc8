"""Each benchmark runs in its tiniest mode on a CPU and prints its result as `ratio ...` lines.

No timing is asserted: these machines are shared and their figures are noise; the benchmarks'
job is to print ratios measured in one run, and these tests only check that they do.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dockerd import docker_engine  # noqa: F401 (fixtures)

pytest.importorskip("skimage.data")

REPO = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"^ratio .+: (\d+\.\d+|nan)x", re.MULTILINE)


def run_bench(script: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def ratios(out: str) -> list[float]:
    return [float(v) for v in RATIO.findall(out)]


def test_train_step_prints_ours_against_naive_and_ceiling():
    out = run_bench("train_step.py", "--device", "cpu", "--archs", "resnet18", "--res", "32", "--batch", "2",
                    "--steps", "1", "--warmup", "1", "--reps", "1")
    assert "ratio ours/naive resnet18@32" in out and "ratio ours/ceiling resnet18@32" in out, out
    assert all(r > 0 for r in ratios(out)), out


def test_data_pipeline_prints_ratios_for_full_size_and_resized_jpegs(tmp_path):
    out = run_bench("data_pipeline.py", "--images", "8", "--reps", "1", "--size", "64", "--dir", str(tmp_path))
    assert "ratio ours/ImageFolder per worker, full-size" in out, out
    assert "ratio ours/ImageFolder per worker, resize-short 160" in out, out
    from trainer import decode

    # Where the partial decoder is built, the same run also compares it with whole-image decoding.
    native = decode._jpegcrop is not None
    assert ("ratio ours/ours with whole-image decoding (trainer._jpegcrop off), full-size" in out) == native, out
    assert len(ratios(out)) == (6 if native else 4) and all(r > 0 for r in ratios(out)), out
    # The generated set looks like ImageNet: ~500x375 JPEGs (portrait or landscape).
    from PIL import Image
    sizes = [Image.open(p).size for p in (tmp_path / "full" / "train").glob("*/*.jpg")]
    assert sizes and all(330 <= min(s) <= 420 and 440 <= max(s) <= 560 for s in sizes), sizes


def test_end_to_end_trains_from_jpeg_files_and_prints_the_ratio(tmp_path):
    out = run_bench("end_to_end.py", "--device", "cpu", "--images", "32", "--batch", "8", "--steps", "2",
                    "--warmup", "1", "--workers", "1", "--res", "32", "--dir", str(tmp_path))
    assert "ratio end-to-end/synthetic" in out and "data-wait fraction" in out, out
    assert len(ratios(out)) == 1 and ratios(out)[0] > 0, out


def test_prepare_prints_interleaved_ratios_against_extract_and_move():
    out = run_bench("prepare.py", "--images", "150", "--classes", "3", "--reps", "2", "--workers", "1")
    assert "ratio prepare --resize-short / baseline" in out and "ratio prepare without --resize-short / baseline" in out, out
    assert "2 interleaved repetitions" in out, out
    assert all(r > 0 for r in ratios(out)), out


def test_forecast_compares_the_logs_projection_with_what_the_run_then_took():
    out = run_bench("forecast.py", "--epochs", "3", "--per-class", "8")
    assert "after epoch" in out and "ratio projected/actual time left, after epoch 1" in out, out
    assert "ratio projected/actual, mean over epochs" in out, out
    assert len(ratios(out)) == 2 and all(r > 0 for r in ratios(out)), out


def test_dataset_restore_compares_shards_with_object_by_object():
    out = run_bench("dataset_restore.py", "--files", "120", "--mean-kb", "8", "--shard-mb", "1", "--rounds", "1")
    assert "ratio shards/objects" in out and "images/s" in out, out
    assert len(ratios(out)) == 1 and ratios(out)[0] > 0, out


@pytest.mark.needs_docker
@pytest.mark.needs_sshd
def test_image_overlap_times_the_pull_and_the_sync_alone_in_turn_and_at_once(docker_engine):  # noqa: F811
    import shutil as _shutil

    from tests.conftest import require

    require(_shutil.which("docker-registry") is not None, "docker-registry is not installed")
    out = run_bench("image_overlap.py", "--image-mb", "4", "--data-mb", "4", "--rounds", "1")
    assert "pull alone" in out and "sync alone" in out and "ratio overlapped/sequential" in out, out
    assert len(ratios(out)) == 1 and ratios(out)[0] > 0, out


def test_gpu_all_runs_the_steps_asked_and_writes_a_summary(tmp_path):
    """bench/gpu-all.sh (every GPU figure of the README in one go) in its seconds-long CPU mode: each
    step asked for runs, its output is kept, and the summary lists the steps with their ratios."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", DEVICE="cpu", SMALL="1", PYTHON=sys.executable)
    script = str(REPO / "bench" / "gpu-all.sh")
    proc = subprocess.run(["bash", script, str(tmp_path), "pipeline", "graphs"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "== pipeline:" in summary and "== graphs:" in summary and "== e2e-short" not in summary, summary
    assert summary.count("   ok in ") == 2 and "   ratio ours/ImageFolder per worker" in summary, summary
    assert "ratio ours/ImageFolder" in (tmp_path / "data_pipeline.txt").read_text()
    bad = subprocess.run(["bash", script, str(tmp_path), "no-such-step"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step no-such-step" in bad.stdout
