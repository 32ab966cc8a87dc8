"""sync.py against a real sshd (through the proxy command); the "instance" disk is a local folder."""
from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.job.sync import DiskFull, SyncError, data_root, local_manifest, sync_dataset, sync_s3
from orchestrator.remote.base import ConnectionLost
from orchestrator.remote.local import LocalSession
from orchestrator.remote.ssh import connect
from tests.conftest import require
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401

pytestmark = pytest.mark.needs_sshd


def make_dataset(root: Path, files: int = 40, max_size: int = 200_000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    for i in range(files):
        path = root / f"class_{i % 4:02d}" / f"img {i:04d}é.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, max_size)))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i + 0.25))
    return root


def assert_identical(local: Path, remote: Path) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            twin = remote / path.relative_to(local)
            assert twin.read_bytes() == path.read_bytes(), path
            assert int(twin.stat().st_mtime) == int(path.stat().st_mtime), path


@pytest.fixture
def session(ssh_endpoint):
    with connect(ssh_endpoint) as s:
        yield s


def test_files_arrive_identical_and_a_second_sync_sends_nothing(session, tmp_path):
    data = make_dataset(tmp_path / "data")
    remote = tmp_path / "instance" / "data"
    first = sync_dataset(session, data, str(remote), progress=False)
    assert first.files_total == first.files_sent == 40
    assert first.bytes_sent == first.bytes_total == sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert_identical(data, remote)

    second = sync_dataset(session, data, str(remote), progress=False)
    assert (second.files_sent, second.bytes_sent) == (0, 0)
    assert (second.files_total, second.bytes_total) == (first.files_total, first.bytes_total)

    changed = data / "class_01" / "img 0001é.bin"
    changed.write_bytes(b"new content")
    third = sync_dataset(session, data, str(remote), progress=False)
    assert (third.files_sent, third.bytes_sent) == (1, len(b"new content"))
    assert_identical(data, remote)


def test_a_half_written_remote_file_is_resent(session, tmp_path):
    data = make_dataset(tmp_path / "data", files=10, max_size=100_000, seed=1)
    remote = tmp_path / "instance"
    sync_dataset(session, data, str(remote), progress=False)
    victim = max((p for p in remote.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:  # what an interrupted tar leaves: a short file with a fresh time
        f.truncate(victim.stat().st_size // 2)
    report = sync_dataset(session, data, str(remote), progress=False)
    assert report.files_sent == 1
    assert_identical(data, remote)


class _CutAfter:
    """The real session, but the connection is cut (by the relay) once `limit` bytes have gone out."""

    def __init__(self, session, server, limit: int):
        self._session, self._server, self._limit = session, server, limit
        self.where = session.where

    def __getattr__(self, name):
        return getattr(self._session, name)

    def exec_stream(self, cmd):
        stream = self._session.exec_stream(cmd)
        if "tar -x" in cmd:
            real_write, sent = stream.stdin.write, [0]

            def write(data):
                sent[0] += len(data)
                if sent[0] > self._limit and sent[0] - len(data) <= self._limit:
                    self._server.cut_connections()
                    time.sleep(0.5)  # the relay notices within 0.1 s
                return real_write(data)

            stream.stdin.write = write
        return stream


def test_a_cut_sync_resumes_and_completes(sshd_server, ssh_endpoint, tmp_path):
    data = make_dataset(tmp_path / "data", files=40, max_size=400_000, seed=2)
    total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    remote = tmp_path / "instance"
    session = connect(ssh_endpoint)
    with pytest.raises(ConnectionLost, match="run the same command again"):
        sync_dataset(_CutAfter(session, sshd_server, limit=total // 3), data, str(remote), progress=False)
    session.close()
    arrived = sum(1 for p in remote.rglob("*") if p.is_file())
    assert 0 < arrived < 40

    with connect(ssh_endpoint) as again:
        report = sync_dataset(again, data, str(remote), progress=False)
    assert 0 < report.files_sent < 40 and report.bytes_sent < total
    assert report.files_total == 40 and report.bytes_total == total
    assert_identical(data, remote)


def test_a_missing_local_folder_is_a_clear_error(session, tmp_path):
    with pytest.raises(SyncError, match="does not exist"):
        sync_dataset(session, tmp_path / "nope", str(tmp_path / "instance"), progress=False)


def test_progress_bar_does_not_break_the_sync(session, tmp_path, capsys):
    data = make_dataset(tmp_path / "data", files=5, seed=3)
    report = sync_dataset(session, data, str(tmp_path / "instance"), progress=True)
    assert report.files_sent == 5
    assert "sync" in capsys.readouterr().err


def test_local_session_syncs_the_same_way(tmp_path):
    data = make_dataset(tmp_path / "data", files=8, seed=4)
    report = sync_dataset(LocalSession(), data, str(tmp_path / "copy"), progress=False)
    assert report.files_sent == 8
    assert_identical(data, tmp_path / "copy")
    assert sync_dataset(LocalSession(), data, str(tmp_path / "copy"), progress=False).files_sent == 0


# -- a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 2 MB with 30 inodes mounted as the instance's data folder (needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    def do_mount(opts):
        return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], capture_output=True)
    yield mount, do_mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def _can_mount(do_mount) -> bool:
    return os.geteuid() == 0 and do_mount("size=2m,nr_inodes=30").returncode == 0


def test_not_enough_space_is_refused_before_sending(session, small_disk, tmp_path):
    mount, do_mount = small_disk
    require(_can_mount(do_mount), "mounting a small tmpfs needs root (the full-disk tests)")
    data = make_dataset(tmp_path / "data", files=10, max_size=600_000, seed=5)
    with pytest.raises(DiskFull, match="Nothing was sent") as e:
        sync_dataset(session, data, str(mount / "data"), progress=False)
    assert "larger volume" in str(e.value)
    assert not any(p.is_file() for p in mount.rglob("*"))


def test_a_disk_that_fills_during_the_sync_is_reported(session, small_disk, tmp_path):
    mount, do_mount = small_disk
    require(_can_mount(do_mount), "mounting a small tmpfs needs root (the full-disk tests)")
    # Few bytes but more files than the disk has inodes: the free-space check passes, tar hits ENOSPC.
    data = make_dataset(tmp_path / "data", files=60, max_size=100, seed=6)
    with pytest.raises(DiskFull, match="filled up during the sync") as e:
        sync_dataset(session, data, str(mount / "data"), progress=False)
    assert "the next sync sends only the rest" in str(e.value)


# -- s3:// data ---------------------------------------------------------------------------------------
FAKE_AWS = """#!/bin/sh
# Stands in for the AWS CLI on the instance: records what it was given, then "copies" one object.
{{ echo "ARGS: $*"; env; }} > {record}
mkdir -p "$4" && echo object > "$4/part-0000.bin"
"""


def test_s3_is_copied_on_the_instance_without_local_credentials(sshd_server, session, tmp_path, monkeypatch):
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIAORCHTESTLOCALKEY1",
        "AWS_SECRET_ACCESS_KEY": "orch-test-local-secret-3f9a1c",
        "AWS_SESSION_TOKEN": "orch-test-local-session-token-77d2",
        "AWS_PROFILE": "orch-test-local-profile",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    record = tmp_path / "aws-call.txt"
    fake = sshd_server.bin_dir / "aws"
    fake.write_text(FAKE_AWS.format(record=record))
    fake.chmod(0o755)
    try:
        report = sync_s3(session, "s3://orch-test-bucket/imagenet/", str(tmp_path / "instance"))
    finally:
        fake.unlink()
    seen = record.read_text()
    assert f"ARGS: s3 sync s3://orch-test-bucket/imagenet/ {tmp_path / 'instance'}" in seen
    for name, value in secrets.items():
        assert value not in seen, f"local {name} reached the instance"
    assert not [line for line in seen.splitlines() if line.startswith("AWS_")]
    assert (report.files_total, report.files_sent) == (1, 1)


def test_s3_without_the_aws_cli_says_how_to_fix_it(session, tmp_path):
    if session.run("command -v aws").ok:
        pytest.skip("an aws CLI is on the test server's PATH")
    with pytest.raises(SyncError, match="AWS CLI is not installed"):
        sync_s3(session, "s3://bucket/x/", str(tmp_path / "instance"))


def test_manifest_skips_directories_and_follows_file_links(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"123")
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b" / "f")
    m = local_manifest(tmp_path)
    assert set(m) == {"a/b/f", "link"} and m["link"][0] == 3


def test_a_home_relative_remote_dir_is_expanded_by_the_shell(tmp_path):
    data = make_dataset(tmp_path / "data", files=3, seed=7)
    report = sync_dataset(LocalSession(), data, "~/orch data/set", progress=False)  # HOME is a temp dir here
    assert report.files_sent == 3
    assert_identical(data, Path(os.environ["HOME"]) / "orch data" / "set")
    assert not (Path.cwd() / "~").exists()


def test_data_root_falls_back_without_a_fast_disk(session):
    assert data_root(session, fallback="~/orch-data") == "~/orch-data"  # the test server has no NVMe mount
