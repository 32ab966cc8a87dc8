"""fetch.py against a real sshd (through the proxy command); the trainer's output folder is local."""
from __future__ import annotations

import hashlib
import random
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.job.fetch import ChecksumMismatch, FetchError, fetch_files, trainer_outputs
from orchestrator.remote.base import ConnectionLost
from orchestrator.remote.local import LocalSession
from orchestrator.remote.ssh import connect
from tests.fixtures.sshd import ssh_endpoint, ssh_key, sshd_server  # noqa: F401

pytestmark = pytest.mark.needs_sshd

MB = 1 << 20


def write_with_sha(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


@pytest.fixture
def trainer_out(tmp_path) -> Path:
    """What the trainer leaves in OUT: checkpoints with .sha256, metrics, log, curves."""
    out = tmp_path / "instance" / "out"
    rng = random.Random(0)
    write_with_sha(out / "checkpoints" / "last.pt", rng.randbytes(3 * MB + 123))
    write_with_sha(out / "checkpoints" / "best.pt", rng.randbytes(2 * MB + 7))
    (out / "metrics.jsonl").write_text('{"epoch": 1, "val_top1": 0.5}\n')
    (out / "train.log").write_text("epoch 1 done\n")
    (out / "curves.png").write_bytes(b"\x89PNG fake")
    return out


@pytest.fixture
def session(ssh_endpoint):
    with connect(ssh_endpoint) as s:
        yield s


def test_fetch_verifies_and_keeps_the_sha256_beside_each_file(session, trainer_out, tmp_path):
    names, optional = trainer_outputs("all")
    dest = tmp_path / "weights"
    report = fetch_files(session, str(trainer_out), names, dest, optional=optional)
    for name in names:
        assert (dest / name).read_bytes() == (trainer_out / name).read_bytes()
    assert set(report.verified) == {dest / "checkpoints/best.pt", dest / "checkpoints/last.pt"}
    assert set(report.files) == {dest / n for n in names}
    assert report.bytes_downloaded == sum((trainer_out / n).stat().st_size for n in names)
    assert not list(dest.rglob("*.part"))
    # The user can check again with standard tools.
    check = subprocess.run(["sha256sum", "-c", "best.pt.sha256", "last.pt.sha256"], cwd=dest / "checkpoints",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    again = fetch_files(session, str(trainer_out), names, dest, optional=optional)
    # Verified files already in place are not downloaded again; unverifiable small ones are.
    assert again.bytes_downloaded == sum((trainer_out / n).stat().st_size for n in names if not n.endswith(".pt"))


def test_a_truncated_part_resumes_and_transfers_only_the_rest(session, trainer_out, tmp_path):
    source = trainer_out / "checkpoints" / "last.pt"
    size = source.stat().st_size
    dest = tmp_path / "weights"
    part = dest / "checkpoints" / "last.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source.read_bytes()[: MB + 5])
    report = fetch_files(session, str(trainer_out), ["checkpoints/last.pt"], dest)
    assert report.bytes_downloaded == size - (MB + 5) < size
    assert (dest / "checkpoints" / "last.pt").read_bytes() == source.read_bytes()
    assert report.verified == (dest / "checkpoints" / "last.pt",)
    assert not part.exists()


def test_a_part_from_an_older_file_is_restarted_once(session, trainer_out, tmp_path):
    source = trainer_out / "checkpoints" / "best.pt"
    dest = tmp_path / "weights"
    part = dest / "checkpoints" / "best.pt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * MB)  # the start of a checkpoint the trainer has since replaced
    report = fetch_files(session, str(trainer_out), ["checkpoints/best.pt"], dest)
    assert (dest / "checkpoints" / "best.pt").read_bytes() == source.read_bytes()
    assert report.bytes_downloaded == (source.stat().st_size - MB) + source.stat().st_size


def test_a_corrupted_remote_file_is_refused_and_nothing_is_renamed(session, trainer_out, tmp_path):
    dest = tmp_path / "weights"
    older = dest / "checkpoints" / "best.pt"
    older.parent.mkdir(parents=True)
    older.write_bytes(b"the best.pt from an earlier fetch")
    remote = trainer_out / "checkpoints" / "best.pt"
    data = bytearray(remote.read_bytes())
    data[1000] ^= 0xFF  # damaged after the trainer wrote its checksum
    remote.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as e:
        fetch_files(session, str(trainer_out), ["checkpoints/best.pt"], dest)
    assert "does not match" in str(e.value) and "sha256sum -c" in str(e.value)
    assert older.read_bytes() == b"the best.pt from an earlier fetch"
    assert not (dest / "checkpoints" / "best.pt.part").exists()
    assert not (dest / "checkpoints" / "best.pt.sha256").exists()


class _CutAfter:
    """The real session; the connection is cut by the relay once `limit` bytes have been read over SFTP."""

    def __init__(self, session, server, limit: int):
        self._session, self._server, self._limit = session, server, limit
        self.where = session.where

    def sftp(self):
        sftp = self._session.sftp()
        real_open, server, limit = sftp.open, self._server, self._limit

        def open_(path, mode="r"):
            f = real_open(path, mode)
            if path.endswith(".pt"):
                real_read, seen = f.read, [0]

                def read(n=-1):
                    data = real_read(n)
                    seen[0] += len(data)
                    if seen[0] >= limit:
                        server.cut_connections()
                        time.sleep(0.5)
                    return data

                f.read = read
            return f

        sftp.open = open_
        return sftp


def test_a_cut_download_keeps_its_part_and_resumes(sshd_server, ssh_endpoint, trainer_out, tmp_path):
    source = trainer_out / "checkpoints" / "last.pt"
    dest = tmp_path / "weights"
    session = connect(ssh_endpoint)
    with pytest.raises(ConnectionLost, match="to resume from there"):
        fetch_files(_CutAfter(session, sshd_server, limit=MB), str(trainer_out), ["checkpoints/last.pt"], dest)
    session.close()
    part = dest / "checkpoints" / "last.pt.part"
    kept = part.stat().st_size
    assert 0 < kept < source.stat().st_size
    assert not (dest / "checkpoints" / "last.pt").exists()

    with connect(ssh_endpoint) as again:
        report = fetch_files(again, str(trainer_out), ["checkpoints/last.pt"], dest)
    assert report.bytes_downloaded == source.stat().st_size - kept
    assert (dest / "checkpoints" / "last.pt").read_bytes() == source.read_bytes()


def test_missing_files_raise_unless_optional(session, trainer_out, tmp_path):
    (trainer_out / "curves.png").unlink()
    with pytest.raises(FetchError, match="curves.png is not on"):
        fetch_files(session, str(trainer_out), ["curves.png"], tmp_path / "w")
    report = fetch_files(session, str(trainer_out), ["metrics.jsonl", "curves.png"], tmp_path / "w",
                         optional=["curves.png"])
    assert report.files == (tmp_path / "w" / "metrics.jsonl",) and report.verified == ()


def test_local_session_fetches_the_same_way(trainer_out, tmp_path):
    report = fetch_files(LocalSession(), str(trainer_out), ["checkpoints/best.pt"], tmp_path / "w")
    assert report.verified == (tmp_path / "w" / "checkpoints" / "best.pt",)


def test_which_selects_the_trainer_outputs():
    names, optional = trainer_outputs("best")
    assert names[0] == "checkpoints/best.pt" and "checkpoints/best.pt" not in optional
    with pytest.raises(FetchError):
        trainer_outputs("newest")


def test_a_home_relative_remote_dir_works_like_over_sftp(trainer_out, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(trainer_out.parent))
    report = fetch_files(LocalSession(), "~/out", ["checkpoints/last.pt"], tmp_path / "w")
    assert report.verified == (tmp_path / "w" / "checkpoints" / "last.pt",)
