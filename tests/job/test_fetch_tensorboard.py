"""`orch fetch-weights` brings the trainer's TensorBoard event files (OUT/tensorboard) too, so that
`orch tensorboard --fetched DEST` shows them; the machine's names are data, checked before they become paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.job.fetch import fetch_files, folder_files
from orchestrator.remote.local import LocalSession
from orchestrator.remote.ssh import connect
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401 (fixtures)


def trainer_out(root: Path) -> Path:
    out = root / "out"
    (out / "tensorboard" / "train").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"top")
    (out / "tensorboard" / "train" / "events.out.tfevents.2.host.1.0").write_bytes(b"run" * 1000)
    (out / "tensorboard" / "bad\x1b]0;title\x07name").write_bytes(b"x")  # not a plain name: left out
    os.mkfifo(out / "tensorboard" / "a-fifo")  # not a plain file: left out (reading it would block)
    deep = out / "tensorboard" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "too-deep").write_bytes(b"x")
    return out


WANTED = ["tensorboard/events.out.tfevents.1.host.1.0", "tensorboard/train/events.out.tfevents.2.host.1.0"]


@pytest.mark.needs_sshd
def test_event_files_are_listed_over_sftp_and_fetched(ssh_endpoint, tmp_path):
    out = trainer_out(tmp_path / "instance")
    with connect(ssh_endpoint) as session:
        names = folder_files(session, str(out))
        assert sorted(names) == WANTED
        report = fetch_files(session, str(out), names, tmp_path / "weights", optional=names)
    assert [(tmp_path / "weights" / n).read_bytes() for n in WANTED] == [b"top", b"run" * 1000]
    assert len(report.files) == 2


def test_no_tensorboard_folder_is_no_files(tmp_path):
    assert folder_files(LocalSession(), str(tmp_path)) == []
    assert sorted(folder_files(LocalSession(), str(trainer_out(tmp_path)))) == WANTED
