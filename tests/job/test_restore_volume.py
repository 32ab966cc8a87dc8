"""restore.py copying checkpoints off a kept root volume attached to the machine.

Real here: a block device (a loop device over a small ext4 image, standing for the attached EBS
volume, passed by its path), mount/umount, sha256sum, the staging and move-into-place path, run
through `LocalSession` (this machine as the job's machine). Needs root and e2fsprogs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.job.restore import Restore, RestoreError, restore_checkpoints, restore_from_volume, volume_device_path
from orchestrator.remote.local import LocalSession
from tests.conftest import require

JOB = "kvr"


def _checkpoint(folder: Path, name: str, data: bytes, digest: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    (folder / f"{name}.sha256").write_text(f"{digest or hashlib.sha256(data).hexdigest()}  {name}\n")


@pytest.fixture
def kept_volume(tmp_path):
    """Returns make(files_in_outputs) -> the device of a filesystem laid out like the job's old root volume."""
    require(os.geteuid() == 0, "mounting a loop device needs root")
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 not found (apt install e2fsprogs)")
    require(shutil.which("losetup") is not None and os.path.exists("/dev/loop-control"), "no loop devices here")
    devices = []

    def make(fill) -> str:
        tree = tmp_path / f"volume{len(devices)}"
        outputs = tree / os.environ["HOME"].lstrip("/") / "orch" / JOB / "outputs"  # ~/orch/JOB/outputs there
        fill(outputs)
        image = tmp_path / f"volume{len(devices)}.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "16M"], check=True)
        r = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
        require(r.returncode == 0, f"losetup failed: {r.stderr.strip()}")
        devices.append(r.stdout.strip())
        return devices[-1]

    yield make
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


def _mounted_here() -> str:
    return Path("/proc/mounts").read_text()


def test_checkpoints_and_metrics_come_off_the_kept_volume_verified(kept_volume, tmp_path):
    def fill(outputs: Path) -> None:
        _checkpoint(outputs / "checkpoints", "last.pt", b"last epoch 3")
        _checkpoint(outputs / "checkpoints", "best.pt", b"best epoch 2")
        (outputs / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')

    device = kept_volume(fill)
    outputs = tmp_path / "new-instance" / "outputs"
    restore = Restore(volume_id="vol-0123abcd", volume_device=device)  # what `orch launch --resume` hands the job
    report = restore_checkpoints(LocalSession(), restore, JOB, str(outputs))

    assert report.source == "volume" and report.where == "vol-0123abcd"
    assert report.files == ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl")
    ckpt = outputs / "checkpoints"
    assert (ckpt / "last.pt").read_bytes() == b"last epoch 3" and (ckpt / "best.pt").read_bytes() == b"best epoch 2"
    assert subprocess.run(["sha256sum", "-c", "--strict", "last.pt.sha256", "best.pt.sha256"], cwd=ckpt).returncode == 0
    assert (outputs / "metrics.jsonl").read_text().count("epoch") == 3
    assert not (ckpt / ".restore").exists()
    assert "orch-volume." not in _mounted_here()  # unmounted, and the temp folder gone
    assert not list(Path("/tmp").glob("orch-volume.*"))


def test_a_checkpoint_that_does_not_match_its_digest_is_not_put_in_place(kept_volume, tmp_path):
    device = kept_volume(lambda outputs: _checkpoint(outputs / "checkpoints", "last.pt", b"torn write", "0" * 64))
    outputs = tmp_path / "outputs"
    with pytest.raises(RestoreError, match="does not match its .sha256"):
        restore_from_volume(LocalSession(), "vol-0123abcd", JOB, str(outputs), device=device)
    assert not (outputs / "checkpoints" / "last.pt").exists() and not (outputs / "checkpoints" / ".restore").exists()
    assert "orch-volume." not in _mounted_here()


def test_a_volume_without_a_checkpoint_says_so(kept_volume, tmp_path):
    device = kept_volume(lambda outputs: (outputs / "metrics.jsonl").parent.mkdir(parents=True))
    with pytest.raises(RestoreError, match="has no .*/orch/kvr/outputs/checkpoints/last.pt"):
        restore_from_volume(LocalSession(), "vol-0123abcd", JOB, str(tmp_path / "outputs"), device=device)
    assert "orch-volume." not in _mounted_here()


def test_a_missing_device_is_reported_and_nothing_is_mounted(tmp_path, monkeypatch):
    monkeypatch.setattr("orchestrator.job.restore._DEVICE_WAIT_S", 1)
    with pytest.raises(RestoreError, match="not usable"):
        restore_from_volume(LocalSession(), "vol-0123abcd", JOB, str(tmp_path / "outputs"),
                            device=str(tmp_path / "no-such-device"))


def test_the_device_of_an_attached_volume_is_its_nitro_nvme_serial():
    assert volume_device_path("vol-0123abcd") == "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123abcd"
