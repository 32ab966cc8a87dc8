"""A checkpoint and its .sha256 are replaced as a pair: a kill at any point of a save leaves every
file with its own digest or none, so the good weights are never taken for corrupt."""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from pathlib import Path

import pytest

from trainer import checkpoint as ckpt


class Killed(BaseException):
    """What a SIGKILL looks like from inside: the save stops there (BaseException, like KeyboardInterrupt)."""


@contextlib.contextmanager
def killed_at(n: int, monkeypatch):
    """Raise Killed at the n-th rename or delete on the filesystem; yields [whether it was reached]."""
    real_replace, real_unlink = os.replace, Path.unlink
    calls, hit = itertools.count(1), [False]

    def maybe_kill():
        if next(calls) == n:
            hit[0] = True
            raise Killed

    def replace(a, b):
        maybe_kill()
        return real_replace(a, b)

    def unlink(self, missing_ok=False):
        maybe_kill()
        return real_unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        m.setattr(Path, "unlink", unlink)
        yield hit


def digests_check(folder: Path) -> None:
    """Every .sha256 names a file beside it that matches (`sha256sum -c`, as a user would check)."""
    for sha in folder.glob("*.sha256"):
        r = subprocess.run(["sha256sum", "-c", sha.name], cwd=folder, capture_output=True, text=True)
        assert r.returncode == 0, (sha.name, sha.read_text(), r.stdout + r.stderr, sorted(p.name for p in folder.iterdir()))


def payload(w: int) -> dict:
    return {"model": {"w": w}, "classes": ["a"]}


@pytest.mark.parametrize("name, keep_previous", [("last.pt", True), ("best.pt", False)])
def test_a_kill_at_any_step_of_a_save_leaves_no_file_beside_a_wrong_digest(tmp_path, monkeypatch, name, keep_previous):
    for n in itertools.count(1):
        folder = tmp_path / f"kill-{n}"
        for w in (1, 2):
            ckpt.save(payload(w), folder / name, keep_previous=keep_previous)
        with killed_at(n, monkeypatch) as hit:
            with contextlib.suppress(Killed):
                ckpt.save(payload(3), folder / name, keep_previous=keep_previous)
        digests_check(folder)
        if keep_previous:
            loaded, _ = ckpt.load_latest(folder)
            assert not list(folder.glob("*.corrupt")), sorted(p.name for p in folder.iterdir())
        else:
            loaded = ckpt.load(folder / name)
        assert loaded["model"]["w"] in (2, 3), n
        if not hit[0]:
            assert loaded["model"]["w"] == 3
            break
    assert n > 3   # the save has several steps, and a kill was tried at each
