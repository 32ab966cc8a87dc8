"""bench/gpu-acceptance.sh in its CPU plumbing mode, and bench/t4_projection.py's arithmetic.

No figure is asserted (a CPU run at 32 px measures nothing); the script's job on a GPU is a summary
a reader can trust, so these tests check that every part is named with its result lines, that a
failing step is reported with its reason while the later steps still run, and that a step that
cannot run here says why instead of failing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("skimage.data")   # end_to_end.py's generated JPEGs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu-acceptance.sh"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
PARTS = ("[1 train step]", "[2 end to end]", "[3 Fashion-MNIST]", "[4 T4 projection]")


def acceptance(results: Path, *steps: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", DEVICE="cpu", SMALL="1", PYTHON=python, **env)
    return subprocess.run(["bash", str(SCRIPT), str(results), *steps], env=env, capture_output=True, text=True,
                          timeout=900)


def sections(summary: str) -> dict[str, str]:
    """summary.txt split at its `== [part] step: command` lines: step -> its lines."""
    found = re.split(r"^== \[[^]]+\] ([\w-]+): .*$", summary, flags=re.MULTILINE)
    return dict(zip(found[1::2], found[2::2]))


@pytest.mark.slow
def test_every_part_runs_and_a_failing_step_is_reported_while_the_rest_run(tmp_path):
    """The whole script, its seconds-long CPU mode, with one step made to fail (the python it runs
    for resnet50 in bf16 exits 3): that step is FAILED with its last lines, every later step still
    runs, each of the four parts is in the summary with its result lines, and the exit status is 1."""
    failing = tmp_path / "python"
    failing.write_text("#!/usr/bin/env bash\n"
                       'case " $* " in *" train_step.py "*"--precision bf16 "*"--archs resnet50 "*)\n'
                       '  echo "injected failure: no GPU for resnet50" >&2; exit 3 ;;\nesac\n'
                       f'exec "{sys.executable}" "$@"\n')
    failing.chmod(0o755)
    results = tmp_path / "results"
    proc = acceptance(results, python=str(failing))
    summary = (results / "summary.txt").read_text()
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout == summary   # what the terminal shows is what is kept
    assert summary.startswith("gpu-acceptance.sh ") and "SMALL=1 (the plumbing" in summary, summary
    assert "no CUDA GPU | best precision here: bf16" in summary, summary
    for part in PARTS:
        assert f"== {part} " in summary, summary
    steps = sections(summary)
    assert list(steps) == ["step-rn18-fp16", "step-rn50-fp16", "step-rn18-best", "step-rn50-best", "e2e", "fmnist",
                           "projection"], summary

    assert "FAILED (exit 3)" in steps["step-rn50-best"], summary
    assert "| injected failure: no GPU for resnet50" in steps["step-rn50-best"], summary
    for step in ("step-rn18-fp16", "step-rn50-fp16", "step-rn18-best"):
        assert "   ok in " in steps[step] and f"ratio ours/naive resnet{step[7:9]}@32" in steps[step], summary
        assert "ratio ours/ceiling" in steps[step] and re.search(r" ours +\d", steps[step]), summary
    assert "   ok in " in steps["e2e"] and "ratio end-to-end/synthetic" in steps["e2e"], summary
    assert "data-wait fraction" in steps["e2e"], summary
    if (FMNIST / "train-images-idx3-ubyte.gz").exists():
        assert "   ok in " in steps["fmnist"], summary
        assert re.search(r"fashion-mnist: 93% (NOT reached within 1 epochs: best val top-1|val top-1 reached)",
                         steps["fmnist"]), summary
    else:
        assert "   SKIPPED: " in steps["fmnist"] and "dataset-fashion-mnist" in steps["fmnist"], summary
    assert "   ok in " in steps["projection"], summary
    for recipe in ("t4-rn18-fast", "t4-rn50"):
        assert f"projection {recipe}: none: a CPU run" in steps["projection"] and "NOT a projection" in summary, summary
    assert "a step FAILED" in summary.splitlines()[-1], summary

    kept = {p.name for p in results.iterdir()}
    assert kept >= {"summary.txt", "train_step_rn18_fp16.txt", "train_step_rn50_fp16.txt", "train_step_rn18_best.txt",
                    "train_step_rn50_best.txt", "e2e_rn18_w7.txt", "fashion_mnist.txt", "t4_projection.txt"}, kept
    assert "t4-rn18-fast: resnet18, blurpool" in (results / "t4_projection.txt").read_text()


def test_a_step_that_cannot_run_here_is_skipped_with_its_reason_not_failed(tmp_path):
    """No Fashion-MNIST on the machine (a lent GPU machine may lack it), and no time left before the
    deadline: both steps say SKIPPED and why, nothing runs, the exit status stays 0."""
    results = tmp_path / "results"
    proc = acceptance(results, "fmnist", "projection", FMNIST_SOURCE=str(tmp_path / "absent"), DEADLINE="5")
    summary = (results / "summary.txt").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Fashion-MNIST: {tmp_path / 'absent'} missing (part 3 is skipped)" in summary, summary
    steps = sections(summary)
    assert "SKIPPED: " in steps["fmnist"] and "apt-get install dataset-fashion-mnist" in steps["fmnist"], summary
    assert "SKIPPED: no time left of the 5 s deadline" in steps["projection"], summary
    assert (results / "fashion_mnist.txt").read_text().startswith("SKIPPED: ")
    assert "no step failed" in summary.splitlines()[-1], summary

    bad = acceptance(tmp_path / "r2", "no-such-step")
    assert bad.returncode == 2 and "unknown step no-such-step" in bad.stdout


# ---------------------------------------------------------------- bench/t4_projection.py's arithmetic

@pytest.fixture
def projection(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import t4_projection

    return t4_projection


@pytest.mark.parametrize("name, spec", [
    ("Tesla T4", "T4"), ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"), ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB"), ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"), ("NVIDIA A10", "A10"),
    # Not in the table: no projection rather than another GPU's figures.
    ("NVIDIA H100 NVL", None), ("NVIDIA H200 NVL", None), ("NVIDIA GH200 480GB", None), ("NVIDIA L40S", None),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_the_gpu_is_matched_to_its_own_specs_or_to_none(projection, name, spec):
    found = projection.gpu_spec(name)
    assert (found.name if found else None) == spec


def test_the_specs_are_the_dense_datasheet_figures(projection):
    specs = {s.name: (s.fp16_tflops, s.mem_gbps) for s in projection.SPECS}
    assert specs["T4"] == (65, 320) and projection.T4.name == "T4"
    assert specs["H100 SXM"] == (989, 3350) and specs["H100 PCIe"] == (756, 2000) and specs["H200"] == (989, 4800)
    assert specs["A100 SXM 80GB"] == (312, 2039) and specs["L4"] == (121, 300) and specs["A10G"] == (125, 600)


def test_hours_are_each_epoch_at_its_rate_plus_every_evaluation(projection):
    # 2 epochs at 128 px (1,000 img/s), 1 at 160 (500 img/s), 3 evaluations with flip TTA (2 passes) at 2,000 img/s.
    hours = projection.run_hours([128, 128, 160], {128: 1000.0, 160: 500.0}, eval_rate=2000.0, n_evals=3,
                                 eval_passes=2, train_images=1000, val_images=100)
    assert hours == pytest.approx((1 + 1 + 2 + 3 * 100 * 2 / 2000) / 3600)
    assert projection.evaluations(SimpleNamespace(epochs=5, eval_every=2)) == 3      # epochs 2, 4 and the last
    assert projection.evaluations(SimpleNamespace(epochs=16, eval_every=1)) == 16



def test_the_headline_gives_the_t4_range_with_its_scalings_or_says_why_there_is_none(projection):
    h100 = projection.gpu_spec("NVIDIA H100 80GB HBM3")
    # 0.3 h here: x65/989 (compute) -> 4.56 h, x320/3350 (bandwidth) -> 3.14 h on a T4.
    line = projection.headline("t4-rn18-fast", 0.3, h100, "NVIDIA H100 80GB HBM3", [])
    assert line.startswith("projection t4-rn18-fast: 3.1-4.6 h on a T4, $2.36-$3.43 at $0.752/h "), line
    assert "compute-scaled x0.066 = T4 65 / H100 SXM 989 dense fp16 tensor TFLOPS: 4.6 h" in line, line
    assert "bandwidth-scaled x0.096 = 320 / 3350 GB/s: 3.1 h" in line and line.endswith("0.30 h here)"), line
    t4 = projection.gpu_spec("Tesla T4")
    line = projection.headline("t4-rn50", 12.0, t4, "Tesla T4", ["train @192: batch 128, not 256: 256 does not fit"])
    assert line.startswith("projection t4-rn50: 12.0 h on this T4 (measured, not scaled), $9.02 at $0.752/h"), line
    assert line.endswith("; batch reduced for memory: train @192: batch 128, not 256: 256 does not fit"), line
    line = projection.headline("t4-rn50", 2.0, None, "NVIDIA B200", [])
    assert line.startswith("projection t4-rn50: none: no specs for 'NVIDIA B200'") and "2.00 GPU hours" in line, line

    rates = projection.t4_rates("t4-rn18-fast", [("train @128", 30_000.0), ("eval @205", 60_000.0)], h100, 2)
    assert rates == ("T4 rates t4-rn18-fast, images/s (compute-bandwidth scaled): train @128 1,972-2,866; "
                     "eval @205 3,943-5,731 (forward passes: 2 per image with TTA)"), rates
    assert projection.t4_rates("x", [("train @160", 1500.0)], t4, 1) == "T4 rates x, images/s (measured): train @160 1,500"
