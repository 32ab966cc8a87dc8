"""The orch package a managed job's instances install (lifecycle/orch_package.py, infra/bootstrap.sh `start`): the
same bytes from the same files, every name a plain relative path, and a source tree pip builds into a wheel that
installs and runs `python -m orchestrator.lifecycle.self_start`. Built offline here (`--no-build-isolation`, the
dependencies from this venv); on an instance pip fetches them from PyPI, which the tests can't reach."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile

from orchestrator import assets
from orchestrator.lifecycle import orch_package
from tests.install.test_wheel import fresh_venv_with


def test_the_package_is_the_same_bytes_each_time_and_names_only_plain_relative_files():
    first, second = orch_package.build(), orch_package.build()
    assert first.sha256 == second.sha256 and first.data == second.data
    assert first.name == f"orch-{first.sha256[:16]}.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 and m.mtime == 0 for m in members)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert {"pyproject.toml", "setup.py", "infra/bootstrap.sh", "Dockerfile", "trainer/train-flags.json",
            "orchestrator/lifecycle/self_start.py", "orchestrator/data/prices.json"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or f"/{assets.BUNDLE}/" in n]


def test_the_package_builds_into_a_wheel_whose_install_runs_self_start(tmp_path):
    with tarfile.open(fileobj=io.BytesIO(orch_package.build().data)) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(tmp_path / "src")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("orch_trainer-*.whl")
    held = set(zipfile.ZipFile(wheel).namelist())
    assert {"orchestrator/lifecycle/self_start.py", f"orchestrator/{assets.BUNDLE}/infra/bootstrap.sh",
            "orchestrator/data/prices.json"} <= held
    venv = fresh_venv_with(wheel, tmp_path)
    ran = subprocess.run([str(venv / "bin" / "python"), "-m", "orchestrator.lifecycle.self_start"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 2 and "usage: python -m orchestrator.lifecycle.self_start s3://" in ran.stderr, ran.stderr
