"""A dataset file this user cannot read is a local problem, not a dropped connection: the sync sends the
rest, then fails naming the file and the fix (a second run, unchanged, would fail the same way)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]

SYNC = """
import json, sys
from orchestrator.remote.local import LocalSession
from orchestrator.job.sync import sync_dataset
try:
    report = sync_dataset(LocalSession(), sys.argv[1], sys.argv[2], progress=False)
    print(json.dumps({"sent": report.files_sent}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


@pytest.fixture
def shared_tmp():
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="orch-unreadable-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sync_as_a_user(data: Path, dest: Path) -> dict:
    """Run the sync as an unprivileged user: root reads every file, whatever its mode."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to sync as another user")
        prefix = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    r = subprocess.run([*prefix, sys.executable, "-c", SYNC, str(data), str(dest)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env={**os.environ, "HOME": str(dest.parent)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_unreadable_file_is_named_and_the_rest_is_sent(shared_tmp):
    data = shared_tmp / "data"
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        path = data / "train" / "c1" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 100)
    for folder in (data, data / "train", data / "train" / "c1"):
        folder.chmod(0o755)
    for path in (data / "train" / "c1").iterdir():
        path.chmod(0o644)
    (data / "train" / "c1" / "2.jpg").chmod(0o000)
    dest = shared_tmp / "instance"
    dest.mkdir(mode=0o777)
    dest.chmod(0o777)

    for _ in range(2):  # the second run, unchanged, says the same: not "connection lost, run it again"
        result = sync_as_a_user(data, dest / "data")
        assert result["error"] == "SyncError", result
        assert str(data / "train" / "c1" / "2.jpg") in result["message"]
        assert "Permission denied" in result["message"] and "chmod a+r" in result["message"]
        assert "connection" not in result["message"]
    assert (dest / "data" / "train" / "c1" / "1.jpg").read_bytes() == b"1.jpg" * 100  # the others arrived
    assert (dest / "data" / "train" / "c1" / "3.jpg").read_bytes() == b"3.jpg" * 100

    (data / "train" / "c1" / "2.jpg").chmod(0o644)  # the fix the message gives
    assert sync_as_a_user(data, dest / "data") == {"sent": 1}
