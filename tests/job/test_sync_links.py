"""Linked folders in a dataset (`train -> /mnt/big/train`, a subset made of `ln -s` class folders) are
synced as the files they hold; a broken link or one back to a parent folder is refused, naming it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.job.sync import SyncError, sync_dataset
from orchestrator.remote.ssh import connect
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401

pytestmark = pytest.mark.needs_sshd


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def session(ssh_endpoint):
    with connect(ssh_endpoint) as s:
        yield s


def test_linked_folders_are_sent_as_their_files(session, tmp_path):
    big = tmp_path / "big"  # another disk, say
    write(big / "train" / "n01" / "a.jpg", b"a" * 10)
    write(big / "train" / "n02" / "b.jpg", b"b" * 20)
    write(big / "classes" / "n03" / "c.jpg", b"c" * 30)
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(big / "train", data / "train")  # the whole split lives elsewhere
    (data / "val").mkdir()
    os.symlink(big / "classes" / "n03", data / "val" / "n03")  # a class folder linked into a subset
    os.symlink(big / "classes" / "n03", data / "val" / "again")  # the same folder twice is not a loop
    remote = tmp_path / "instance"

    report = sync_dataset(session, data, str(remote), progress=False)
    assert (report.files_total, report.files_sent, report.bytes_total) == (4, 4, 10 + 20 + 30 + 30)
    for rel, content in [("train/n01/a.jpg", b"a" * 10), ("train/n02/b.jpg", b"b" * 20),
                         ("val/n03/c.jpg", b"c" * 30), ("val/again/c.jpg", b"c" * 30)]:
        path = remote / rel
        assert path.read_bytes() == content and not path.is_symlink() and not path.parent.is_symlink(), rel
    assert sync_dataset(session, data, str(remote), progress=False).files_sent == 0


def test_a_link_back_to_a_parent_folder_is_refused_naming_it(session, tmp_path):
    data = tmp_path / "data"
    write(data / "train" / "n01" / "a.jpg", b"a")
    os.symlink(data / "train", data / "train" / "n01" / "loop")
    with pytest.raises(SyncError, match="links back to") as e:
        sync_dataset(session, data, str(tmp_path / "instance"), progress=False)
    assert str(data / "train" / "n01" / "loop") in str(e.value) and "Nothing was sent" in str(e.value)
    assert not (tmp_path / "instance").exists()


def test_a_broken_link_is_refused_naming_it(session, tmp_path):
    data = tmp_path / "data"
    write(data / "val" / "n01" / "a.jpg", b"a")
    os.symlink(tmp_path / "unmounted" / "train", data / "train")  # its disk is not mounted
    with pytest.raises(SyncError, match="does not exist") as e:
        sync_dataset(session, data, str(tmp_path / "instance"), progress=False)
    assert str(data / "train") in str(e.value) and str(tmp_path / "unmounted" / "train") in str(e.value)
